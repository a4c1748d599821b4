"""A real local control plane: etcd, kube-apiserver and kube-controller-manager.

``ControlPlane(directory).up()`` makes a PKI, starts the three servers on free
loopback ports, waits until the API server is ready and the controllers are working,
and writes ``admin.kubeconfig``. ``down()`` stops every process it started, including
the ones of an ``up`` that was killed half-way.

With ``data_plane=True`` the control plane gets a node (:mod:`sandbox.devenv.dataplane`):
the API server binds to the host end of the node's private link instead of loopback,
authorizes with ``Node,RBAC``, admits with ``NodeRestriction``, publishes its endpoint
for the ``kubernetes`` Service and reaches kubelets with a client certificate; the
controller manager runs the controllers pods and Services need. The directory layout::

    DIR/state.json            ports and PIDs of the running servers
    DIR/admin.kubeconfig      system:masters client certificate
    DIR/users/NAME.kubeconfig users made with add_user()
    DIR/pki/                  CA, serving certificates, service-account keys
    DIR/etcd/                 etcd data (discarded by the next up)
    DIR/logs/NAME.log         one log per server
    DIR/node/                 the node, when there is one (see sandbox.devenv.dataplane)
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import BaseModel, Field

from sandbox.devenv import processes
from sandbox.devenv.dataplane import DataPlane
from sandbox.devenv.kubeconfig import write_kubeconfig
from sandbox.devenv.nodeconfig import APISERVER_KUBELET_CLIENT, CLUSTER_CIDR
from sandbox.devenv.pki import CertificateAuthority, write_private_key
from sandbox.devenv.toolchain import KUBERNETES_VERSION, tool_path
from sandbox.errors import ConfigurationError, ControlPlaneError

__all__ = ["DEFAULT_DIR", "SERVERS", "ControlPlane", "ControlPlaneState"]

DEFAULT_DIR = Path(".regsandbox/dev")
"""Where ``sandboxctl dev`` keeps its control plane unless told otherwise."""

SERVERS = ("etcd", "kube-apiserver", "kube-controller-manager")
"""The servers, in start order (stopped in reverse)."""

SERVICE_CIDR = "10.96.0.0/16"

_CONTROLLERS = ",".join(
    (
        "namespace-controller",
        "garbage-collector-controller",
        "resourcequota-controller",
        "serviceaccount-controller",
        "serviceaccount-token-controller",
        "clusterrole-aggregation-controller",
        "root-ca-certificate-publisher-controller",
        "persistentvolumeclaim-protection-controller",
        "persistentvolume-protection-controller",
    )
)

_NODE_CONTROLLERS = ",".join(
    (
        "endpoints-controller",
        "endpointslice-controller",
        "endpointslice-mirroring-controller",
        "replicaset-controller",
        "deployment-controller",
        # The chart's audit service is a StatefulSet with a volume claim.
        "statefulset-controller",
        "persistentvolume-binder-controller",
        "node-lifecycle-controller",
        "node-ipam-controller",
        "pod-garbage-collector-controller",
        "taint-eviction-controller",
        "ttl-controller",
    )
)
"""What a control plane with a node runs on top of ``_CONTROLLERS``."""

_ADMISSION = ",".join(
    (
        "NamespaceLifecycle",
        "LimitRanger",
        "ServiceAccount",
        "PodSecurity",
        "ResourceQuota",
        "DefaultStorageClass",
        "StorageObjectInUseProtection",
        "ValidatingAdmissionPolicy",
        "MutatingAdmissionWebhook",
        "ValidatingAdmissionWebhook",
    )
)


class ControlPlaneState(BaseModel):
    """What a running control plane needs to be found, used and stopped."""

    directory: Path
    etcd_port: int
    etcd_peer_port: int
    apiserver_port: int
    controller_manager_port: int
    pids: dict[str, int] = Field(default_factory=dict)
    bind_address: str = "127.0.0.1"
    """Where the API server listens: loopback, or the host end of the node's link."""
    data_plane: bool = False
    """Whether the control plane was started with a node."""
    kubernetes_version: str = KUBERNETES_VERSION
    started_at: dt.datetime = Field(default_factory=lambda: dt.datetime.now(dt.UTC))
    ready: bool = False

    @property
    def server(self) -> str:
        """The API server URL."""
        return f"https://{self.bind_address}:{self.apiserver_port}"


class ControlPlane:
    """One local control plane rooted at a directory."""

    def __init__(
        self, directory: Path = DEFAULT_DIR, *, durable_etcd: bool = False, data_plane: bool = False
    ) -> None:
        """Use ``directory`` for state; ``durable_etcd`` keeps etcd's fsyncs (slower);
        ``data_plane`` adds a node on which pods run."""
        self.directory = directory.resolve()
        self.durable_etcd = durable_etcd
        self.data_plane = data_plane

    @property
    def node(self) -> DataPlane:
        """The node of this control plane (present or not)."""
        return DataPlane(self.directory)

    # -- paths ----------------------------------------------------------------------
    @property
    def state_file(self) -> Path:
        """JSON file with ports and PIDs."""
        return self.directory / "state.json"

    @property
    def pki_dir(self) -> Path:
        """Certificates and keys."""
        return self.directory / "pki"

    @property
    def logs_dir(self) -> Path:
        """One log per server."""
        return self.directory / "logs"

    @property
    def admin_kubeconfig(self) -> Path:
        """Kubeconfig of the cluster administrator (group ``system:masters``)."""
        return self.directory / "admin.kubeconfig"

    def user_kubeconfig(self, name: str) -> Path:
        """Where :meth:`add_user` writes the kubeconfig of ``name``."""
        return self.directory / "users" / f"{name}.kubeconfig"

    # -- state ------------------------------------------------------------------------
    def load_state(self) -> ControlPlaneState | None:
        """The recorded state, or None when nothing was started here."""
        try:
            return ControlPlaneState.model_validate_json(self.state_file.read_text())
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise ControlPlaneError(
                f"{self.state_file} is corrupt ({exc}); run `dev down`"
            ) from exc

    def _save_state(self, state: ControlPlaneState) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(state.model_dump_json(indent=2))
        tmp.replace(self.state_file)

    # -- lifecycle --------------------------------------------------------------------
    def up(
        self,
        timeout: float = 90.0,
        progress: Callable[[str], None] = lambda _msg: None,
    ) -> ControlPlaneState:
        """Start the control plane and wait until it serves; reuse a healthy one."""
        current = self.load_state()
        if (
            current
            and current.ready
            and current.data_plane == self.data_plane
            and self._healthy(current)
            and (not self.data_plane or self.node.running())
        ):
            progress(f"control plane already running at {current.server}")
            return current
        if current or processes.processes_under(self.directory, SERVERS) or self.node.present():
            progress("cleaning up a previous control plane")
            self.down()
        binaries = {name: tool_path(name) for name in SERVERS}
        self.directory.mkdir(parents=True, exist_ok=True)
        for stale in ("etcd", "pki", "users", "logs", "kcm-certs"):
            shutil.rmtree(self.directory / stale, ignore_errors=True)
        self.admin_kubeconfig.unlink(missing_ok=True)

        deadline = time.monotonic() + timeout
        bind_address = "127.0.0.1"
        if self.data_plane:
            # Fails with the reason before anything starts when the machine cannot do it.
            bind_address = self.node.prepare(progress).host_ip
        state = ControlPlaneState(
            directory=self.directory,
            etcd_port=processes.free_port(),
            etcd_peer_port=processes.free_port(),
            apiserver_port=processes.free_port(),
            controller_manager_port=processes.free_port(),
            bind_address=bind_address,
            data_plane=self.data_plane,
        )
        started: dict[str, Any] = {}
        try:
            progress("making certificates")
            self._make_pki(state)
            self._save_state(state)
            for name in SERVERS:
                progress(f"starting {name}")
                cmd = [str(binaries[name]), *self._args(name, state)]
                proc = processes.spawn(cmd, self.logs_dir / f"{name}.log")
                started[name] = proc
                state.pids[name] = proc.pid
                self._save_state(state)
                self._wait_ready(name, state, started, deadline)
            progress("waiting for the controllers")
            self._wait_controllers(state, started, deadline)
            if self.data_plane:
                self.node.start(
                    server=state.server,
                    pki_dir=self.pki_dir,
                    admin_kubeconfig=self.admin_kubeconfig,
                    service_cidr=SERVICE_CIDR,
                    deadline=deadline,
                    progress=progress,
                )
        except BaseException:
            self.down()
            raise
        state.ready = True
        self._save_state(state)
        return state

    def down(self, timeout: float = 10.0) -> list[str]:
        """Stop every server of this control plane; safe to call repeatedly.

        Returns the names of the servers that were running. The node, if any, goes
        first: its pods and kubelet must not outlive the API server they report to.
        """
        node = self.node
        stopped: list[str] = []
        node_failure: ControlPlaneError | None = None
        if node.present():
            try:
                stopped = node.down()
            except ControlPlaneError as exc:  # still stop the servers, then report it
                node_failure = exc
        state = self.load_state() if self.state_file.exists() else None
        found = processes.processes_under(self.directory, SERVERS)
        if state:
            for name, pid in state.pids.items():
                if processes.is_running(pid) and pid in found:
                    found[pid] = name
        for name in reversed(SERVERS):
            pids = [pid for pid, n in found.items() if n == name]
            # With a node, kube-apiserver's graceful stop waits up to 20 s to remove its
            # `kubernetes` endpoint; the cluster is disposable, so it gets 3 s.
            wait = min(timeout, 3.0) if name == "kube-apiserver" else timeout
            if processes.terminate(pids, timeout=wait):
                stopped.append(name)
        self.state_file.unlink(missing_ok=True)
        if node_failure is not None:
            raise node_failure
        return stopped

    def status(self) -> dict[str, Any]:
        """A summary: each server's PID and liveness, and whether the API is ready."""
        state = self.load_state()
        if state is None:
            return {"directory": str(self.directory), "running": False, "servers": {}}
        servers = {
            name: {"pid": pid, "running": processes.is_running(pid)}
            for name, pid in state.pids.items()
        }
        return {
            "directory": str(self.directory),
            "running": all(s["running"] for s in servers.values()) and bool(servers),
            "ready": self._healthy(state),
            "server": state.server,
            "kubeconfig": str(self.admin_kubeconfig),
            "kubernetesVersion": state.kubernetes_version,
            "startedAt": state.started_at.isoformat(),
            "servers": servers,
            "node": self._node_status(state),
        }

    def add_user(self, name: str, groups: list[str] | tuple[str, ...] = ()) -> Path:
        """Write ``users/NAME.kubeconfig`` with a client certificate for ``name``/``groups``."""
        state = self.load_state()
        if state is None:
            raise ControlPlaneError(
                f"no control plane in {self.directory}; run `sandboxctl dev up`"
            )
        if not name or "/" in name or name.startswith("."):
            raise ConfigurationError(f"invalid user name {name!r}")
        ca = CertificateAuthority.load(self.pki_dir)
        cert = ca.issue_client(name, groups)
        return write_kubeconfig(self.user_kubeconfig(name), state.server, ca.cert_pem, name, cert)

    # -- internals --------------------------------------------------------------------
    def _node_status(self, state: ControlPlaneState) -> dict[str, Any] | None:
        node = self.node.status()
        if node is None:
            return None
        node["ready"] = False
        try:
            with self._admin_client(state) as client:
                resp = client.get(f"/api/v1/nodes/{node['name']}")
            if resp.status_code == 200:
                conditions = resp.json().get("status", {}).get("conditions", [])
                node["ready"] = any(
                    c.get("type") == "Ready" and c.get("status") == "True" for c in conditions
                )
        except (httpx.HTTPError, OSError, ValueError):
            pass
        return node

    def _make_pki(self, state: ControlPlaneState) -> None:
        pki = self.pki_dir
        ca = CertificateAuthority.create()
        ca.save(pki)
        if state.data_plane:
            ca.issue_client(APISERVER_KUBELET_CLIENT).write(pki, "apiserver-kubelet-client")
        ca.issue_server(
            "kube-apiserver",
            dns=[
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
            ips=sorted({"127.0.0.1", "10.96.0.1", state.bind_address}),
        ).write(pki, "apiserver")
        ca.issue_server("kube-controller-manager", dns=["localhost"], ips=["127.0.0.1"]).write(
            pki, "controller-manager"
        )
        sa_key = ec.generate_private_key(ec.SECP256R1())
        write_private_key(
            pki / "sa.key",
            sa_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        (pki / "sa.pub").write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        admin = ca.issue_client("regsandbox-admin", ["system:masters"])
        admin.write(pki, "admin")
        write_kubeconfig(
            self.admin_kubeconfig, state.server, ca.cert_pem, "regsandbox-admin", admin
        )
        kcm = ca.issue_client("system:kube-controller-manager")
        write_kubeconfig(
            self.directory / "controller-manager.kubeconfig",
            state.server,
            ca.cert_pem,
            "system:kube-controller-manager",
            kcm,
        )

    def _args(self, name: str, s: ControlPlaneState) -> list[str]:
        pki, d = self.pki_dir, self.directory
        if name == "etcd":
            peer = f"http://127.0.0.1:{s.etcd_peer_port}"
            client = f"http://127.0.0.1:{s.etcd_port}"
            args = [
                "--name=default",
                f"--data-dir={d / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=default={peer}",
                "--log-level=warn",
            ]
            if not self.durable_etcd:
                args.append("--unsafe-no-fsync=true")
            return args
        if name == "kube-apiserver":
            args = [
                f"--etcd-servers=http://127.0.0.1:{s.etcd_port}",
                f"--bind-address={s.bind_address}",
                f"--advertise-address={s.bind_address}",
                f"--secure-port={s.apiserver_port}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                "--allow-privileged=true",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--profiling=false",
                "--v=1",
            ]
            if not s.data_plane:
                return [
                    *args,
                    "--authorization-mode=RBAC",
                    f"--enable-admission-plugins={_ADMISSION}",
                    "--endpoint-reconciler-type=none",
                ]
            return [
                *args,
                # Kubelets are confined to their own node's objects.
                "--authorization-mode=Node,RBAC",
                f"--enable-admission-plugins={_ADMISSION},NodeRestriction",
                # The `kubernetes` Service gets this server's address as its endpoint.
                "--endpoint-reconciler-type=lease",
                f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
                f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
                f"--kubelet-certificate-authority={pki / 'ca.crt'}",
                "--kubelet-preferred-address-types=InternalIP",
            ]
        if name == "kube-controller-manager":
            kubeconfig = d / "controller-manager.kubeconfig"
            return [
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={s.controller_manager_port}",
                f"--tls-cert-file={pki / 'controller-manager.crt'}",
                f"--tls-private-key-file={pki / 'controller-manager.key'}",
                f"--controllers={_CONTROLLERS}" + (f",{_NODE_CONTROLLERS}" if s.data_plane else ""),
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                "--leader-elect=false",
                "--concurrent-gc-syncs=5",
                "--namespace-sync-period=10s",
                *(
                    [
                        "--allocate-node-cidrs=true",
                        f"--cluster-cidr={CLUSTER_CIDR}",
                        "--node-cidr-mask-size=24",
                        f"--service-cluster-ip-range={SERVICE_CIDR}",
                    ]
                    if s.data_plane
                    else []
                ),
                "--v=1",
            ]
        raise AssertionError(name)

    def _admin_client(self, state: ControlPlaneState) -> httpx.Client:
        ctx = ssl.create_default_context(cafile=str(self.pki_dir / "ca.crt"))
        ctx.load_cert_chain(str(self.pki_dir / "admin.crt"), str(self.pki_dir / "admin.key"))
        return httpx.Client(base_url=state.server, verify=ctx, timeout=2.0)

    def _probe(self, name: str, state: ControlPlaneState) -> bool:
        try:
            if name == "etcd":
                resp = httpx.get(f"http://127.0.0.1:{state.etcd_port}/health", timeout=1.0)
                return resp.status_code == 200 and json.loads(resp.text).get("health") == "true"
            if name == "kube-apiserver":
                with self._admin_client(state) as client:
                    return client.get("/readyz").status_code == 200
            ctx = ssl.create_default_context(cafile=str(self.pki_dir / "ca.crt"))
            url = f"https://127.0.0.1:{state.controller_manager_port}/healthz"
            return httpx.get(url, verify=ctx, timeout=1.0).status_code == 200
        except (httpx.HTTPError, OSError, ValueError):
            return False

    def _healthy(self, state: ControlPlaneState) -> bool:
        return all(processes.is_running(p) for p in state.pids.values()) and self._probe(
            "kube-apiserver", state
        )

    def _check_alive(self, started: dict[str, Any]) -> None:
        for name, proc in started.items():
            code = proc.poll()
            if code is not None:
                log = self.logs_dir / f"{name}.log"
                raise ControlPlaneError(
                    f"{name} exited with code {code} during start-up; last lines of {log}:\n"
                    + processes.log_tail(log)
                )

    def _wait_ready(
        self, name: str, state: ControlPlaneState, started: dict[str, Any], deadline: float
    ) -> None:
        while True:
            self._check_alive(started)
            if self._probe(name, state):
                return
            if time.monotonic() > deadline:
                log = self.logs_dir / f"{name}.log"
                raise ControlPlaneError(
                    f"{name} did not become ready in time; last lines of {log}:\n"
                    + processes.log_tail(log)
                )
            time.sleep(0.1)

    def _wait_controllers(
        self, state: ControlPlaneState, started: dict[str, Any], deadline: float
    ) -> None:
        """Wait for the ``default`` ServiceAccount: proof the controllers act on the API."""
        with self._admin_client(state) as client:
            while True:
                self._check_alive(started)
                try:
                    resp = client.get("/api/v1/namespaces/default/serviceaccounts/default")
                    if resp.status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    log = self.logs_dir / "kube-controller-manager.log"
                    raise ControlPlaneError(
                        "kube-controller-manager did not create the default ServiceAccount in "
                        f"time; last lines of {log}:\n" + processes.log_tail(log)
                    )
                time.sleep(0.1)
