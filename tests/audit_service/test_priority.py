"""Appends first: a read of the log waits while an append is in flight, within a bound.

A writer waits for its append to be durable before it goes on; a reader paging through
the whole log does not. The middleware holds log reads back while appends are handled
(so a busy reader takes no interpreter time from writers), lets them through after its
bound (so readers are slowed, never stopped), and never delays health or metrics.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from audit.priority import AppendsFirst
from tests.audit_service.conftest import wait_for
from tests.servers import serve_app


class Service:
    """A service whose append is held until the test releases it."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.appending = threading.Event()
        self.order: list[str] = []

    def append(self, request: Request) -> PlainTextResponse:  # runs in the threadpool
        self.appending.set()
        self.release.wait(timeout=60)
        self.order.append("append")
        return PlainTextResponse("appended")

    def read(self, request: Request) -> PlainTextResponse:
        self.order.append("read")
        return PlainTextResponse("read")

    def app(self, max_wait: float) -> AppendsFirst:
        routes = [
            Route("/v1/entries", self.append, methods=["POST"]),
            Route("/v1/entries/{index}", self.read),
            Route("/healthz", self.read),
        ]
        return AppendsFirst(Starlette(routes=routes), max_wait=max_wait)


@pytest.fixture
def held() -> Iterator[Service]:
    service = Service()
    yield service
    service.release.set()


def _in_thread(call: str, url: str, answers: list[int]) -> threading.Thread:
    def run() -> None:
        method, path = call.split(" ")
        answers.append(httpx.request(method, f"{url}{path}", timeout=60).status_code)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_read_of_the_log_waits_for_the_append_in_flight(held: Service) -> None:
    answers: list[int] = []
    app = held.app(max_wait=60)
    with serve_app(app) as url:
        appending = _in_thread("POST /v1/entries", url, answers)
        wait_for(held.appending.is_set, "the append to be in flight")
        reading = _in_thread("GET /v1/entries/3", url, answers)
        wait_for(lambda: app.waiting == 1, "the read to wait for its turn")
        # Health is not held back, even while the append is.
        assert httpx.get(f"{url}/healthz", timeout=30).status_code == 200
        assert held.order == ["read"]  # the health check's, not the log read's
        held.release.set()
        appending.join(timeout=30)
        reading.join(timeout=30)
    assert answers == [200, 200]
    assert held.order == ["read", "append", "read"]


def test_a_read_waits_no_longer_than_the_bound(held: Service) -> None:
    answers: list[int] = []
    with serve_app(held.app(max_wait=0.05)) as url:
        appending = _in_thread("POST /v1/entries", url, answers)
        wait_for(held.appending.is_set, "the append to be in flight")
        assert httpx.get(f"{url}/v1/entries/3", timeout=30).status_code == 200
        assert held.order == ["read"]  # answered while the append is still held
        held.release.set()
        appending.join(timeout=30)
    assert answers == [200]


def test_the_bound_is_a_number_of_seconds() -> None:
    with pytest.raises(ValueError, match="at least 0"):
        AppendsFirst(Starlette(), max_wait=-1)
