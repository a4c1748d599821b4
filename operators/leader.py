"""Leader election on a ``coordination.k8s.io`` Lease: one operator replica acts at a time.

Why a Lease and not kopf's peering: peering freezes *every* operator that sees a peer of
equal priority (so replicas of one Deployment need distinct priorities), needs its own
CRD, and a replica killed with ``SIGKILL`` keeps its peering record — and so keeps the
others frozen — for the record's whole lifetime (60 s by default). A Lease is the
primitive ``kube-controller-manager`` and ``kube-scheduler`` use: a standby takes over
``lease_seconds`` after the leader's last renewal, and a leader that stops cleanly hands
over at once by releasing it.

How the election reads time: a standby never compares its clock with the ``renewTime``
another node wrote. It notes, on its own monotonic clock, when it last saw the Lease
change (its ``resourceVersion``), and only takes the Lease once it has seen no change for
``leaseDurationSeconds``. Every write is a ``replace`` with the ``resourceVersion`` it
read, so two standbys racing for an expired Lease cannot both win: the API server
refuses the second with 409 Conflict.

A leader that cannot renew within ``renew_deadline_seconds`` (shorter than the lease)
stops at once — before any standby may take over — instead of finishing its handlers:
a half-done reconcile is what a crash leaves too, and every step converges from there.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

from kubernetes import client
from kubernetes.client.rest import ApiException

from operators.metrics import LEADER

__all__ = ["LeaderElector", "LeaseSettings", "lead"]

_log = logging.getLogger("regsandbox.leader")


@dataclass(frozen=True)
class LeaseSettings:
    """Where the Lease lives and how its timing is tuned."""

    namespace: str
    """Namespace of the Lease (the operator's own)."""
    name: str
    """Name of the Lease."""
    identity: str
    """This replica's name in ``holderIdentity`` (the pod name in a cluster)."""
    lease_seconds: int = 15
    """How long a standby waits after the last renewal it saw before taking over."""
    renew_deadline_seconds: float = 10.0
    """A leader that has not renewed for this long stops acting (< ``lease_seconds``)."""
    retry_seconds: float = 2.0
    """Interval between renewals by the leader and between attempts by a standby."""

    def __post_init__(self) -> None:
        """Refuse timings under which two leaders could overlap."""
        if not 0 < self.retry_seconds < self.renew_deadline_seconds < self.lease_seconds:
            raise ValueError(
                "leader election needs 0 < retry_seconds < renew_deadline_seconds < "
                f"lease_seconds; got {self.retry_seconds}, {self.renew_deadline_seconds}, "
                f"{self.lease_seconds}"
            )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class LeaderElector:
    """Acquire, renew and release one Lease; every call is one round trip or two."""

    def __init__(self, api: client.ApiClient, settings: LeaseSettings) -> None:
        """Elect through ``api`` (the operator's own identity) with ``settings``."""
        self._leases = client.CoordinationV1Api(api)
        self.settings = settings
        self._seen_version: str | None = None
        self._seen_at = 0.0
        self._renewed_at: float | None = None

    @property
    def leading(self) -> bool:
        """Whether this replica's last renewal is younger than the renew deadline."""
        return (
            self._renewed_at is not None
            and time.monotonic() - self._renewed_at < self.settings.renew_deadline_seconds
        )

    def try_acquire_or_renew(self) -> bool:
        """One election round: True if this replica holds the Lease afterwards."""
        s = self.settings
        now = _now()
        timeout = s.retry_seconds
        try:
            lease = self._leases.read_namespaced_lease(
                s.name, s.namespace, _request_timeout=timeout
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
            return self._create(now)
        version = lease.metadata.resource_version
        if version != self._seen_version:
            self._seen_version, self._seen_at = version, time.monotonic()
        spec = lease.spec or client.V1LeaseSpec()
        holder = spec.holder_identity or None
        duration = spec.lease_duration_seconds or s.lease_seconds
        if holder not in (None, s.identity) and time.monotonic() < self._seen_at + duration:
            return False
        transitions = spec.lease_transitions or 0
        if holder != s.identity:
            transitions += 1
            spec.acquire_time = now
        spec.holder_identity = s.identity
        spec.lease_duration_seconds = s.lease_seconds
        spec.renew_time = now
        spec.lease_transitions = transitions
        lease.spec = spec
        try:
            written = self._leases.replace_namespaced_lease(
                s.name, s.namespace, lease, _request_timeout=timeout
            )
        except ApiException as exc:
            if exc.status == 409:  # another replica wrote first
                return False
            raise
        self._mark_renewed(written)
        if holder != s.identity:
            _log.info("leader election: %s now holds lease %s", s.identity, s.name)
        return True

    def _create(self, now: dt.datetime) -> bool:
        s = self.settings
        body = client.V1Lease(
            metadata=client.V1ObjectMeta(name=s.name, namespace=s.namespace),
            spec=client.V1LeaseSpec(
                holder_identity=s.identity,
                lease_duration_seconds=s.lease_seconds,
                acquire_time=now,
                renew_time=now,
                lease_transitions=0,
            ),
        )
        try:
            written = self._leases.create_namespaced_lease(
                s.namespace, body, _request_timeout=s.retry_seconds
            )
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        self._mark_renewed(written)
        _log.info("leader election: %s created and holds lease %s", s.identity, s.name)
        return True

    def _mark_renewed(self, lease: client.V1Lease) -> None:
        self._seen_version, self._seen_at = lease.metadata.resource_version, time.monotonic()
        self._renewed_at = time.monotonic()
        LEADER.set(1)

    def release(self) -> None:
        """Give the Lease up now (clean shutdown), so a standby takes over at its next try."""
        s = self.settings
        try:
            lease = self._leases.read_namespaced_lease(
                s.name, s.namespace, _request_timeout=s.retry_seconds
            )
            if lease.spec is None or lease.spec.holder_identity != s.identity:
                return
            lease.spec.holder_identity = None
            lease.spec.lease_duration_seconds = 1
            lease.spec.renew_time = _now()
            self._leases.replace_namespaced_lease(
                s.name, s.namespace, lease, _request_timeout=s.retry_seconds
            )
        except ApiException as exc:  # the Lease then simply expires
            _log.warning("leader election: could not release lease %s: %s", s.name, exc.reason)
        self._renewed_at = None
        LEADER.set(0)

    async def _attempt(self) -> bool | None:
        """One round in a thread: True/False as the API server answered, None if it did not."""
        try:
            return await asyncio.to_thread(self.try_acquire_or_renew)
        except Exception as exc:  # the API server may be briefly unreachable
            _log.warning("leader election: attempt failed: %s", exc)
            return None

    async def acquire(self) -> None:
        """Wait (as a standby) until this replica holds the Lease."""
        _log.info(
            "leader election: %s waiting for lease %s", self.settings.identity, self.settings.name
        )
        while not await self._attempt():
            await asyncio.sleep(self.settings.retry_seconds)

    async def hold(self, on_lost: Callable[[], None]) -> None:
        """Renew until cancelled; call ``on_lost`` once the renew deadline passes unrenewed."""
        while True:
            await asyncio.sleep(self.settings.retry_seconds)
            renewed = await self._attempt()
            # False: another replica holds it; None: no answer, which is fine until the
            # renew deadline (standbys wait the longer lease duration).
            if renewed is False or not self.leading:
                LEADER.set(0)
                _log.error(
                    "leader election: %s lost lease %s; stopping",
                    self.settings.identity,
                    self.settings.name,
                )
                on_lost()
                return


@asynccontextmanager
async def _standby_liveness(endpoint: str | None) -> AsyncIterator[None]:
    """Answer the liveness probe while waiting, so the kubelet keeps a standby alive.

    kopf serves the endpoint once it runs; this server is closed before that.
    """
    if not endpoint:
        yield
        return
    from aiohttp import web

    url = urlsplit(endpoint)

    async def healthy(_: web.Request) -> web.Response:
        return web.json_response({"standby": True})

    app = web.Application()
    app.router.add_get(url.path or "/", healthy)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, url.hostname, url.port or 80).start()
    try:
        yield
    finally:
        await runner.cleanup()


async def lead(
    elector: LeaderElector,
    work: Callable[[], Awaitable[None]],
    on_lost: Callable[[], None],
    liveness: str | None = None,
) -> None:
    """Wait for the Lease, then run ``work`` while renewing it; release it when done.

    ``on_lost`` must stop this replica from acting at once (the operator exits); a clean
    end of ``work`` (SIGTERM) releases the Lease so a standby takes over without waiting.
    """
    LEADER.set(0)
    async with _standby_liveness(liveness):
        await elector.acquire()
    keeper = asyncio.create_task(elector.hold(on_lost))
    try:
        await work()
    finally:
        keeper.cancel()
        await asyncio.to_thread(elector.release)
