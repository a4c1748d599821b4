"""The Lease election itself, against the real API server (no operator processes).

What must hold (client-go's leaderelection contract, which regsandbox follows):
a standby never takes a Lease it has seen renewed within the lease duration, whatever
time the holder wrote (clocks differ between nodes); of two standbys racing for an
expired Lease exactly one wins; a released Lease is taken at the next attempt.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from kubernetes import client

from operators.leader import LeaderElector, LeaseSettings
from sandbox.kube.apply import apply
from sandbox.provision.rbac import LEADER_ELECTION_LEASE

pytestmark = pytest.mark.integration

NAMESPACE = "regsandbox-election-test"


@pytest.fixture
def elector(admin_api: client.ApiClient) -> Iterator[Callable[..., LeaderElector]]:
    """Factory of electors on one Lease (a namespace of its own: no operator role here)."""
    apply(admin_api, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    _drop(admin_api)

    def make(identity: str, lease_seconds: int = 3) -> LeaderElector:
        return LeaderElector(
            admin_api,
            LeaseSettings(
                namespace=NAMESPACE,
                name=LEADER_ELECTION_LEASE,
                identity=identity,
                lease_seconds=lease_seconds,
                renew_deadline_seconds=lease_seconds * 2 / 3,
                retry_seconds=0.5,
            ),
        )

    yield make
    _drop(admin_api)


def _drop(api: client.ApiClient) -> None:
    try:
        client.CoordinationV1Api(api).delete_namespaced_lease(LEADER_ELECTION_LEASE, NAMESPACE)
    except client.ApiException as exc:
        if exc.status != 404:
            raise


def _holder(api: client.ApiClient) -> str | None:
    lease = client.CoordinationV1Api(api).read_namespaced_lease(LEADER_ELECTION_LEASE, NAMESPACE)
    return lease.spec.holder_identity


def test_timings_under_which_two_leaders_could_overlap_are_refused() -> None:
    for lease, renew, retry in ((10, 10, 2), (10, 12, 2), (10, 5, 5), (10, 5, 0)):
        with pytest.raises(ValueError, match="leader election needs"):
            LeaseSettings("ns", "l", "me", lease, renew, retry)


def test_a_standby_trusts_its_own_clock_not_the_holders_renew_time(
    admin_api: client.ApiClient, elector: Callable[..., LeaderElector]
) -> None:
    make = elector
    first, second = make("a"), make("b")
    assert first.try_acquire_or_renew()
    assert not second.try_acquire_or_renew()
    # The holder's clock is an hour behind: its renewTime looks long expired.
    leases = client.CoordinationV1Api(admin_api)
    lease = leases.read_namespaced_lease(LEADER_ELECTION_LEASE, NAMESPACE)
    lease.spec.renew_time = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    leases.replace_namespaced_lease(LEADER_ELECTION_LEASE, NAMESPACE, lease)
    assert not second.try_acquire_or_renew(), "took a lease renewed a moment ago"
    assert _holder(admin_api) == "a"
    # Once no renewal has been seen for the lease duration, the standby takes it.
    deadline = time.monotonic() + 15
    while not second.try_acquire_or_renew():
        assert time.monotonic() < deadline, "the standby never took the expired lease"
        time.sleep(0.2)
    assert _holder(admin_api) == "b"
    # The old holder, back, finds it taken and does not renew over it.
    assert not first.try_acquire_or_renew()


def test_of_two_standbys_racing_for_an_expired_lease_exactly_one_wins(
    admin_api: client.ApiClient, elector: Callable[..., LeaderElector]
) -> None:
    make = elector
    holder = make("a", lease_seconds=2)
    assert holder.try_acquire_or_renew()
    racers = [make(f"r{i}", lease_seconds=2) for i in range(4)]
    for racer in racers:
        assert not racer.try_acquire_or_renew()  # each has now seen the holder's renewal
    # The holder is gone (it renews no more). The standbys all try, at once and again,
    # until the lease has moved on.
    barrier = threading.Barrier(len(racers))
    won: list[str] = []

    def race(racer: LeaderElector) -> None:
        barrier.wait()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and _holder(admin_api) == "a":
            if racer.try_acquire_or_renew():
                won.append(racer.settings.identity)
                return
            time.sleep(0.01)

    threads = [threading.Thread(target=race, args=(r,)) for r in racers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1, won
    assert _holder(admin_api) == won[0]
    # The losers saw the winner's write just now: none takes it over.
    assert not any(r.try_acquire_or_renew() for r in racers if r.settings.identity != won[0])


def test_a_released_lease_is_taken_at_the_next_attempt(
    admin_api: client.ApiClient, elector: Callable[..., LeaderElector]
) -> None:
    make = elector
    first, second = make("a", lease_seconds=60), make("b", lease_seconds=60)
    assert first.try_acquire_or_renew()
    assert not second.try_acquire_or_renew()
    first.release()
    assert second.try_acquire_or_renew()
    assert _holder(admin_api) == "b"
