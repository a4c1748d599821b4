"""Requests sent on the client's connection pool behave as the generated client's did."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from sandbox.kube.apply import create_or_apply, get, list_objects

_TENANT = {"apiVersion": "regsandbox.io/v1alpha1", "kind": "Tenant", "metadata": {"name": "bank"}}


class _Server(ThreadingHTTPServer):
    seen: list[tuple[str, str, str | None, Any]]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self.server.seen.append((self.command, self.path, self.headers.get("Authorization"), body))
        return body

    def do_GET(self) -> None:
        self._record()
        if self.path == "/k8s/apis/regsandbox.io/v1alpha1/tenants/bank":
            self._answer(200, _TENANT)
        elif self.path.endswith("/tenants/broken"):
            self._answer(500, {"kind": "Status", "code": 500, "reason": "InternalError"})
        elif self.path.startswith("/k8s/apis/regsandbox.io/v1alpha1/tenants?"):
            self._answer(200, {"items": [_TENANT]})
        else:
            self._answer(404, {"kind": "Status", "code": 404, "reason": "NotFound"})

    def do_POST(self) -> None:
        self._record()
        self._answer(409, {"kind": "Status", "code": 409, "reason": "AlreadyExists"})

    def do_PATCH(self) -> None:
        self._answer(200, self._record())


@pytest.fixture
def server() -> Iterator[_Server]:
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.seen = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _api(server: _Server) -> client.ApiClient:
    cfg = client.Configuration()
    cfg.host = f"http://127.0.0.1:{server.server_address[1]}/k8s"  # behind a path
    cfg.api_key = {"authorization": "Bearer t0ken"}
    return client.ApiClient(cfg)


def test_reads_keep_the_path_prefix_the_token_and_the_query(server: _Server) -> None:
    api = _api(server)
    assert get(api, "Tenant", "bank") == _TENANT
    assert get(api, "Tenant", "other") is None  # 404
    assert list_objects(api, "Tenant", label_selector="a=b,c") == [_TENANT]
    assert [(m, p, a) for m, p, a, _ in server.seen] == [
        ("GET", "/k8s/apis/regsandbox.io/v1alpha1/tenants/bank", "Bearer t0ken"),
        ("GET", "/k8s/apis/regsandbox.io/v1alpha1/tenants/other", "Bearer t0ken"),
        ("GET", "/k8s/apis/regsandbox.io/v1alpha1/tenants?labelSelector=a%3Db%2Cc", "Bearer t0ken"),
    ]


def test_a_conflicting_create_is_applied_and_errors_carry_the_status(server: _Server) -> None:
    api = _api(server)
    assert create_or_apply(api, dict(_TENANT)) == _TENANT
    (post, patch) = server.seen
    assert post[:2] == ("POST", "/k8s/apis/regsandbox.io/v1alpha1/tenants?fieldManager=regsandbox")
    assert patch[0] == "PATCH"
    assert patch[1].endswith("/tenants/bank?fieldManager=regsandbox&force=true")
    with pytest.raises(ApiException) as raised:
        get(api, "Tenant", "broken")  # anything but 2xx and 404 is raised
    assert raised.value.status == 500
    assert json.loads(raised.value.body)["reason"] == "InternalError"
