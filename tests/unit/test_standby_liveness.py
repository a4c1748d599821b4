"""A standby replica answers the liveness probe, then frees the port for kopf's."""

from __future__ import annotations

import asyncio

import httpx
from aiohttp import web

from operators.leader import _standby_liveness
from sandbox.devenv.processes import free_port


def test_the_standby_answers_the_probe_and_hands_the_port_over() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/healthz"

    async def scenario() -> tuple[int, int]:
        async with _standby_liveness(url), httpx.AsyncClient() as http:
            standby = (await http.get(url)).status_code

        # What kopf does once this replica leads: serve the same endpoint itself.
        async def healthy(_: web.Request) -> web.Response:
            return web.json_response({})

        app = web.Application()
        app.router.add_get("/healthz", healthy)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            async with httpx.AsyncClient() as http:
                leading = (await http.get(url)).status_code
        finally:
            await runner.cleanup()
        return standby, leading

    assert asyncio.run(scenario()) == (200, 200)
