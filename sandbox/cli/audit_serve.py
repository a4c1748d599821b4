"""``sandboxctl audit serve`` and ``sandboxctl audit witness …``: the audit servers.

- ``serve`` runs the audit log's HTTP API (:mod:`audit.service`) over a log directory;
- ``witness serve`` runs a C2SP tlog-witness (:mod:`audit.witness`) for outside auditors;
- ``witness keygen`` makes a witness key and prints its verifier key.

:func:`register` adds them to the ``sandboxctl audit`` Typer app.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Annotated

import httpx
import structlog
import typer
import uvicorn
from starlette.applications import Starlette

from audit.access import DEFAULT_CACHE_SECONDS, CachedAuthority, ReaderAuthority
from audit.anchor import CheckpointAnchor, FileCheckpointAnchor
from audit.console import ConsoleSettings
from audit.errors import AnchorMismatchError, AuditError
from audit.log import KEY_FILE, AuditLog, read_origin
from audit.read_server import (
    DEFAULT_READ_BURST,
    DEFAULT_READ_NICE,
    DEFAULT_READ_RATE,
    PublishedLog,
    ReaderRates,
    ReadServerProcess,
    create_read_app,
)
from audit.service import AccessPolicy, create_app, create_refusing_app, load_tokens
from audit.signing import load_signer, read_key_text
from audit.witness import (
    CosignatureVerifier,
    Cosigner,
    FileWitnessState,
    Witness,
    witness_app,
)
from audit.witnessing import COSIGNED_FILE, WitnessEndpoint, Witnessing, fetch_witnessed
from sandbox.cli import audit_archive, audit_tls
from sandbox.cli.logsetup import configure_process_logging
from sandbox.cli.output import EXIT_USAGE, fail

__all__ = ["register"]


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        fail(f"--listen {value!r}: want HOST:PORT, e.g. 127.0.0.1:8080", EXIT_USAGE)
    return host.strip("[]"), int(port)


def _run(app: Starlette, listen: str) -> None:
    host, port = _listen(listen)
    configure_process_logging()
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,  # uvicorn's lines go through sandbox.logs like ours
        log_level="warning",
        access_log=False,  # request lines carry nothing we need and may carry tokens
        server_header=False,
    )
    uvicorn.Server(config).run()


def serve(
    log: Annotated[Path, typer.Option("--log", help="Log directory (made by `audit init`).")],
    writers: Annotated[
        Path | None,
        typer.Option(
            "--writers",
            help="Token file of components allowed to append (the fallback to --kube-writer).",
        ),
    ] = None,
    kube_writer: Annotated[
        list[str] | None,
        typer.Option(
            "--kube-writer",
            help="A Kubernetes identity allowed to append with its own token (TokenReview, "
            "--audience), e.g. system:serviceaccount:regsandbox-system:regsandbox-operator; "
            "repeat for each writer.",
        ),
    ] = None,
    listen: Annotated[str, typer.Option("--listen", help="HOST:PORT to listen on.")] = (
        "127.0.0.1:8080"
    ),
    readers: Annotated[
        Path | None, typer.Option("--readers", help="Token file of read-only clients.")
    ] = None,
    open_reads: Annotated[
        bool, typer.Option("--open-reads", help="Let anyone read without a token.")
    ] = False,
    key: Annotated[
        Path | None,
        typer.Option("--key", help="Signing key file (default: the log's own log.key)."),
    ] = None,
    anchor_file: Annotated[
        Path | None,
        typer.Option(
            "--anchor-file",
            help="Checkpoint anchor file, on a volume other than the log's.",
        ),
    ] = None,
    anchor_configmap: Annotated[
        str | None,
        typer.Option(
            "--anchor-configmap",
            help="Checkpoint anchor ConfigMap NAMESPACE/NAME (only this service may update it).",
        ),
    ] = None,
    kubeconfig: Annotated[
        Path | None,
        typer.Option(
            "--kubeconfig",
            help="For --anchor-configmap and --kube-readers (default: in-cluster).",
        ),
    ] = None,
    kube_readers: Annotated[
        bool,
        typer.Option(
            "--kube-readers",
            help="Let Kubernetes identities read: tokens checked by TokenReview, each read "
            "by a SubjectAccessReview on auditentries.regsandbox.io (tenant-<name> "
            "namespace for one tenant, cluster-scoped for the whole log).",
        ),
    ] = False,
    audience: Annotated[
        str,
        typer.Option("--audience", help="Token audience readers' tokens must carry."),
    ] = "regsandbox-audit",
    access_cache_seconds: Annotated[
        float,
        typer.Option(
            "--access-cache-seconds",
            help="How long a token's review and a read decision are reused (0: never).",
            min=0,
        ),
    ] = DEFAULT_CACHE_SECONDS,
    witness: Annotated[
        list[str] | None,
        typer.Option(
            "--witness",
            help="Submission URL of a witness to send every checkpoint to; repeat, "
            "each paired in order with a --witness-vkey.",
        ),
    ] = None,
    witness_vkey: Annotated[
        list[str] | None,
        typer.Option("--witness-vkey", help="That witness's cosignature verifier key (or file)."),
    ] = None,
    witness_quorum: Annotated[
        int | None,
        typer.Option(
            "--witness-quorum",
            help="Cosignatures a checkpoint needs to replace the served cosigned one "
            "(default: all witnesses).",
        ),
    ] = None,
    archive_bucket: audit_archive.ArchiveBucket = None,
    archive_prefix: audit_archive.ArchivePrefix = "",
    archive_endpoint: audit_archive.ArchiveEndpoint = None,
    archive_region: audit_archive.ArchiveRegion = None,
    archive_retention_days: audit_archive.ArchiveRetentionDays = None,
    archive_interval: audit_archive.ArchiveInterval = 30.0,
    tls_listen: Annotated[
        str | None,
        typer.Option(
            "--tls-listen",
            help="HOST:PORT of a second listener where the service terminates TLS itself "
            "(for readers; needs --tls-cert and --tls-key).",
        ),
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", help="Serving certificate (PEM) of --tls-listen.")
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option("--tls-key", help="Its private key (PEM).")
    ] = None,
    client_ca_file: Annotated[
        Path | None,
        typer.Option(
            "--client-ca-file",
            help="On --tls-listen, accept client certificates verified against this CA "
            "bundle (e.g. the cluster's client CA): CN is the user, O the groups, each read "
            "authorised like a token's (needs --kube-readers). Unverified or expired "
            "certificates are refused in the handshake.",
        ),
    ] = None,
    console_session_minutes: Annotated[
        int,
        typer.Option(
            "--console-session-minutes",
            help="How long a sign-in to the web console (/console) lasts; every page still "
            "checks the officer's token and RBAC.",
            min=1,
            max=720,
        ),
    ] = 15,
    console_secure_cookies: Annotated[
        bool,
        typer.Option(
            "--console-secure-cookies",
            help="Mark the console's cookies Secure always; by default they are Secure "
            "unless the browser reached the service over plain HTTP on localhost "
            "(kubectl port-forward).",
        ),
    ] = False,
    read_listen: Annotated[
        str | None,
        typer.Option(
            "--read-listen",
            help="HOST:PORT of a read server: a process of its own, at a lower CPU "
            "priority, serving every read (entries, proofs, receipts, tenants, tiles, "
            "checkpoints, the console; and --tls-listen) from the published log, so "
            "readers never slow appends. --listen then serves writers only.",
        ),
    ] = None,
    read_nice: Annotated[
        int,
        typer.Option(
            "--read-nice",
            help="How many nice steps below the writer the read server runs.",
            min=0,
            max=39,
        ),
    ] = DEFAULT_READ_NICE,
    read_idle: Annotated[
        bool,
        typer.Option(
            "--read-idle/--no-read-idle",
            help="Run the read server in Linux's SCHED_IDLE class: it gets the CPU only "
            "when the writer does not want it (in a container, within the container's CPU "
            "share). --no-read-idle leaves it at --read-nice only.",
        ),
    ] = True,
    read_rate: Annotated[
        float,
        typer.Option(
            "--read-rate",
            help="Entries per second each reader (authenticated identity) may read on the "
            "read server; past it, 429 with Retry-After (0: no bound).",
            min=0,
        ),
    ] = DEFAULT_READ_RATE,
    read_burst: Annotated[
        float,
        typer.Option(
            "--read-burst",
            help="Entries a reader may read at once before --read-rate applies.",
            min=1000,
        ),
    ] = DEFAULT_READ_BURST,
) -> None:
    """Serve the audit log over HTTP: authenticated appends, reads, proofs, receipts.

    Writers append with their own Kubernetes tokens (--kube-writer, checked by TokenReview)
    or, as the fallback, tokens from a token file ('<sha256 hex of token> <identity>' per
    line); with --kube-readers, compliance officers read as themselves (Kubernetes tokens
    and RBAC) and a readers token file is only an explicit fallback. With a
    checkpoint anchor, a log that does not extend the checkpoint it last signed is not
    opened: every request gets 503 and /healthz, /v1/status and /metrics say why.

    With --read-listen, reads have a process of their own (restarted if it dies; the
    ReadsServed condition in /v1/status and regsandbox_audit_read_server_up say when it
    is down) and the --listen port answers readers with 403 naming the read port.
    """
    _listen(listen)
    if read_listen is not None and _listen(read_listen)[1] in {
        _listen(other)[1] for other in (listen, tls_listen) if other
    }:
        fail(
            "--read-listen needs a port of its own (not --listen's nor --tls-listen's)", EXIT_USAGE
        )
    configure_process_logging()
    if kube_readers and open_reads:
        fail("--open-reads would let anyone read what --kube-readers restricts", EXIT_USAGE)
    anchor = _anchor(anchor_file, anchor_configmap, kubeconfig)
    kube_writers = frozenset(w.strip() for w in kube_writer or [] if w.strip())
    if writers is None and not kube_writers:
        fail("give the writers: --kube-writer IDENTITY (repeat) or --writers FILE", EXIT_USAGE)
    tls = _tls_listener(tls_listen, tls_cert, tls_key, client_ca_file, kube_readers)
    needs_kube = kube_readers or bool(kube_writers)
    reviews = _kube_readers(kubeconfig, audience, access_cache_seconds) if needs_kube else None
    try:
        policy = AccessPolicy(
            writers=load_tokens(writers) if writers else {},
            readers=load_tokens(readers) if readers else {},
            open_reads=open_reads,
            authority=reviews if kube_readers else None,
            kube_writers=kube_writers,
            writer_authority=reviews if kube_writers else None,
            client_certificates=client_ca_file is not None,
        )
        signer = load_signer(key or log / KEY_FILE)
        endpoints = _witness_endpoints(witness, witness_vkey)
        extends = fetch_witnessed(endpoints, read_origin(log)) if endpoints else []
        audit_log = AuditLog(log, signer, anchor=anchor, extends=extends)
        witnessing = _witnessing(audit_log, log, endpoints, witness_quorum)
    except AnchorMismatchError as exc:
        _run(create_refusing_app(exc), listen)
        raise typer.Exit(3) from None
    except AuditError as exc:
        fail(str(exc))
    archiver = None
    reads: ReadServerProcess | None = None
    try:
        console = ConsoleSettings(
            session_seconds=console_session_minutes * 60.0,
            secure_cookies=True if console_secure_cookies else None,
        )
        # With a read server, this listener serves writers and sends readers there.
        policy = (
            policy
            if read_listen is None
            else dataclasses.replace(
                policy, reads_at=f"port {_listen(read_listen)[1]}", client_certificates=False
            )
        )
        app = create_app(audit_log, policy, witnessing=witnessing, console=console)
        if read_listen is not None:
            reads = _start_reads(
                app,
                ReadServerConfig(
                    log=str(log),
                    listen=read_listen,
                    writer_status=f"{_loopback_url(listen)}/v1/status",
                    nice=read_nice,
                    idle=read_idle,
                    rate=read_rate,
                    burst=read_burst,
                    writers=None if writers is None else str(writers),
                    readers=None if readers is None else str(readers),
                    kube_writers=sorted(kube_writers),
                    open_reads=open_reads,
                    kube_readers=kube_readers,
                    kubeconfig=None if kubeconfig is None else str(kubeconfig),
                    audience=audience,
                    access_cache_seconds=access_cache_seconds,
                    tls=None if tls is None else [tls_listen or "", str(tls.cert), str(tls.key)],
                    client_ca=None if client_ca_file is None else str(client_ca_file),
                    console_session_minutes=console_session_minutes,
                    console_secure_cookies=console_secure_cookies,
                ),
            )
            tls = None  # the read server terminates TLS for readers
        archiver = audit_archive.start_archiver(
            audit_log,
            app,
            bucket=archive_bucket,
            prefix=archive_prefix,
            endpoint=archive_endpoint,
            region=archive_region,
            retention_days=archive_retention_days,
            interval=archive_interval,
        )
        with audit_tls.serving(app, tls) if tls else contextlib.nullcontext():
            _run(app, listen)
    finally:
        if reads is not None:
            reads.stop()
        if archiver is not None:
            archiver.stop()
        if witnessing is not None:
            witnessing.stop()
        audit_log.close()


def _start_reads(app: Starlette, config: ReadServerConfig) -> ReadServerProcess:
    """Start the read server of ``config`` beside ``app``: its condition and metrics
    join the app's."""
    reads = ReadServerProcess(
        [sys.executable, "-m", "sandbox.cli", "audit", "serve-reads", config.to_arg()],
        f"{_loopback_url(config.listen)}/healthz",
        app.state.metrics.registry,
    )
    app.state.conditions.append(reads.condition)
    app.state.more_metrics.append(reads.scrape)
    reads.start()
    return reads


def _loopback_url(listen: str) -> str:
    """The URL this host reaches a ``HOST:PORT`` listener at (any-address: loopback)."""
    host, port = _listen(listen)
    if host in ("0.0.0.0", "", "::"):  # noqa: S104 - a listen address, not a bind
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@dataclasses.dataclass(frozen=True)
class ReadServerConfig:
    """What ``audit serve`` hands its read server (paths and flags; never a secret)."""

    log: str
    listen: str
    writer_status: str
    nice: int
    idle: bool
    rate: float
    burst: float
    writers: str | None
    readers: str | None
    kube_writers: list[str]
    open_reads: bool
    kube_readers: bool
    kubeconfig: str | None
    audience: str
    access_cache_seconds: float
    tls: list[str] | None
    client_ca: str | None
    console_session_minutes: int
    console_secure_cookies: bool

    def to_arg(self) -> str:
        """As one JSON command-line argument."""
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_arg(cls, text: str) -> ReadServerConfig:
        """From :meth:`to_arg`'s text."""
        return cls(**json.loads(text))


def serve_reads(
    config: Annotated[str, typer.Argument(help="The read server's settings (JSON).")],
) -> None:
    """The read server that `audit serve --read-listen` starts (not for direct use)."""
    configure_process_logging()
    settings = ReadServerConfig.from_arg(config)
    _lower_priority(settings.nice, settings.idle)
    _exit_with_parent()
    tls = None
    if settings.tls is not None:
        listen_tls, cert, key = settings.tls
        ca = None if settings.client_ca is None else Path(settings.client_ca)
        tls = _tls_listener(listen_tls, Path(cert), Path(key), ca, settings.kube_readers)
    kube_writers = frozenset(settings.kube_writers)
    needs_kube = settings.kube_readers or bool(kube_writers)
    kubeconfig = None if settings.kubeconfig is None else Path(settings.kubeconfig)
    reviews = (
        _kube_readers(kubeconfig, settings.audience, settings.access_cache_seconds)
        if needs_kube
        else None
    )
    try:
        policy = AccessPolicy(
            writers=load_tokens(Path(settings.writers)) if settings.writers else {},
            readers=load_tokens(Path(settings.readers)) if settings.readers else {},
            open_reads=settings.open_reads,
            authority=reviews if settings.kube_readers else None,
            kube_writers=kube_writers,
            writer_authority=reviews if kube_writers else None,
            client_certificates=settings.client_ca is not None,
        )
        log = PublishedLog(Path(settings.log))
    except AuditError as exc:
        fail(str(exc))
    status_url = settings.writer_status

    def writer_status() -> tuple[int, bytes]:
        answer = httpx.get(status_url, timeout=2.0)
        return answer.status_code, answer.content

    app = create_read_app(
        log,
        policy,
        rates=ReaderRates(settings.rate, settings.burst),
        console=ConsoleSettings(
            session_seconds=settings.console_session_minutes * 60.0,
            secure_cookies=True if settings.console_secure_cookies else None,
        ),
        writer_status=writer_status,
    )
    try:
        with audit_tls.serving(app, tls) if tls else contextlib.nullcontext():
            _run(app, settings.listen)
    finally:
        log.close()


def _lower_priority(steps: int, idle: bool) -> None:
    """Take ``steps`` nice steps down and, with ``idle``, Linux's SCHED_IDLE class: the
    CPU only when no other task of the container (the writer) wants it, a waking writer
    preempting it at once. Lowering one's own priority needs no privilege; where a
    sandbox (seccomp) refuses it anyway, say so and serve at the priority we have."""
    try:
        now = os.getpriority(os.PRIO_PROCESS, 0)
        os.setpriority(os.PRIO_PROCESS, 0, min(19, now + steps))
        if idle:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except OSError as exc:
        structlog.get_logger("audit.read_server").warning(
            "read server priority not lowered", error=str(exc)
        )


def _exit_with_parent() -> None:
    """End this process (SIGTERM) when the process that started it is gone."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _tls_listener(
    listen: str | None,
    cert: Path | None,
    key: Path | None,
    client_ca: Path | None,
    kube_readers: bool,
) -> audit_tls.TlsListener | None:
    if listen is None:
        if cert or key or client_ca:
            fail("--tls-cert, --tls-key and --client-ca-file need --tls-listen", EXIT_USAGE)
        return None
    if cert is None or key is None:
        fail("--tls-listen needs --tls-cert and --tls-key", EXIT_USAGE)
    if client_ca is not None and not kube_readers:
        fail("--client-ca-file needs --kube-readers (reads are authorised by RBAC)", EXIT_USAGE)
    for path in (cert, key, client_ca):
        if path is not None and not path.is_file():
            fail(f"{path} does not exist", EXIT_USAGE)
    host, port = _listen(listen)
    return audit_tls.TlsListener(host, port, cert, key, client_ca)


def _witness_endpoints(urls: list[str] | None, vkeys: list[str] | None) -> list[WitnessEndpoint]:
    urls, vkeys = urls or [], vkeys or []
    if len(urls) != len(vkeys):
        fail("give one --witness-vkey for each --witness URL, in the same order", EXIT_USAGE)
    try:
        return [
            WitnessEndpoint(url, CosignatureVerifier.from_vkey(_vkey_arg(vkey)))
            for url, vkey in zip(urls, vkeys, strict=True)
        ]
    except AuditError as exc:
        fail(f"--witness-vkey: {exc}", EXIT_USAGE)


def _witnessing(
    audit_log: AuditLog, log: Path, endpoints: list[WitnessEndpoint], quorum: int | None
) -> Witnessing | None:
    if not endpoints:
        return None
    try:
        witnessing = Witnessing(audit_log, endpoints, log / COSIGNED_FILE, publish_quorum=quorum)
    except ValueError as exc:
        audit_log.close()
        fail(f"witnesses: {exc}", EXIT_USAGE)
    witnessing.start()
    return witnessing


def _anchor(
    anchor_file: Path | None, configmap: str | None, kubeconfig: Path | None
) -> CheckpointAnchor | None:
    if anchor_file is not None and configmap is not None:
        fail("give --anchor-file or --anchor-configmap, not both", EXIT_USAGE)
    if anchor_file is not None:
        return FileCheckpointAnchor(anchor_file)
    if configmap is None:
        return None
    namespace, sep, name = configmap.partition("/")
    if not sep or not namespace or not name or "/" in name:
        fail(f"--anchor-configmap {configmap!r}: want NAMESPACE/NAME", EXIT_USAGE)
    from sandbox.errors import SandboxError
    from sandbox.kube.audit_anchor import ConfigMapCheckpointAnchor
    from sandbox.kube.clients import kube_client

    try:
        return ConfigMapCheckpointAnchor(kube_client(kubeconfig), namespace, name)
    except SandboxError as exc:
        fail(str(exc))


def _kube_readers(kubeconfig: Path | None, audience: str, ttl: float) -> ReaderAuthority:
    from sandbox.errors import SandboxError
    from sandbox.kube.audit_access import KubernetesReaders
    from sandbox.kube.clients import kube_client
    from sandbox.provision.names import tenant_namespace

    if not audience.strip():
        fail("--audience must not be empty", EXIT_USAGE)
    try:
        api = kube_client(kubeconfig)
    except SandboxError as exc:
        fail(str(exc))
    return CachedAuthority(KubernetesReaders(api, tenant_namespace, audience=audience), ttl=ttl)


def _vkey_arg(value: str) -> str:
    path = Path(value)
    if "+" not in value and path.is_file():
        return read_key_text(path, "verifier key").strip()
    return value


def witness_serve(
    state: Annotated[
        Path, typer.Option("--state", help="Directory of the witness's per-log state.")
    ],
    vkey: Annotated[
        list[str],
        typer.Option("--vkey", help="Verifier key of a log to witness (or a file); repeat."),
    ],
    key: Annotated[Path, typer.Option("--key", help="The witness's private key file.")],
    listen: Annotated[str, typer.Option("--listen", help="HOST:PORT to listen on.")] = (
        "127.0.0.1:8081"
    ),
) -> None:
    """Run a C2SP tlog-witness: POST /add-checkpoint cosigns consistent checkpoints only."""
    _listen(listen)
    try:
        text = read_key_text(key, "witness key")
    except AuditError as exc:
        fail(str(exc))
    try:
        cosigner = Cosigner.from_private_key(text)
    except AuditError as exc:
        fail(f"witness key {key}: {exc}")
    try:
        store = FileWitnessState(state)
        witness = Witness.from_vkeys(cosigner, [_vkey_arg(v) for v in vkey], store)
    except (AuditError, OSError) as exc:
        fail(str(exc))
    try:
        _run(witness_app(witness), listen)
    finally:
        store.close()


def witness_keygen(
    name: Annotated[str, typer.Option("--name", help="Witness name, e.g. witness.example/w1.")],
    key: Annotated[Path, typer.Option("--key", help="New private key file (mode 0600).")],
) -> None:
    """Create a witness key and print its verifier key (give that to log operators)."""
    try:
        cosigner = Cosigner.generate(name)
    except AuditError as exc:
        fail(str(exc), EXIT_USAGE)
    try:
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        fail(f"{key} already exists; refusing to overwrite a key")
    except OSError as exc:
        fail(f"cannot create {key}: {exc.strerror}")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(cosigner.private_key + "\n")
        f.flush()
        os.fsync(f.fileno())
    typer.echo(cosigner.verifier.vkey)


def register(app: typer.Typer) -> None:
    """Add ``serve`` and the ``witness`` group to ``app`` (the ``sandboxctl audit`` app)."""
    app.command("serve")(serve)
    app.command("serve-reads", hidden=True)(serve_reads)
    witness = typer.Typer(help="Run a C2SP tlog-witness for this log.", no_args_is_help=True)
    witness.command("serve")(witness_serve)
    witness.command("keygen")(witness_keygen)
    app.add_typer(witness, name="witness")
