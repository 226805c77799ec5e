"""The operator's TLS read buffers (kube/main.py), over a real TLS connection on loopback: an
aiohttp client, as kopf's, reading a body many buffers long from an aiohttp server."""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import os
import ssl

import aiohttp
import pytest
import trustme
from aiohttp import web
from carbonaware.kube.main import TLS_READ_BUFFER_BYTES, shrink_tls_read_buffers


def test_a_large_list_arrives_whole_through_the_smaller_tls_read_buffers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # restored after the test: the setting is process-wide, as the operator means it
    monkeypatch.setattr(
        asyncio.sslproto.SSLProtocol, "max_size", asyncio.sslproto.SSLProtocol.max_size
    )
    shrink_tls_read_buffers()
    authority = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_tls)
    client_tls = ssl.create_default_context()
    authority.configure_trust(client_tls)
    body = os.urandom(5 * 1024 * 1024)  # a LIST of ~2,000 CarbonAwareJobs is this size

    async def scenario() -> tuple[bytes, int]:
        async def listing(_: web.Request) -> web.Response:
            return web.Response(body=body)

        app = web.Application()
        app.router.add_get("/apis/carbonaware.io/v1/carbonawarejobs", listing)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_tls)
        await site.start()
        port = runner.addresses[0][1]
        try:
            connector = aiohttp.TCPConnector(ssl=client_tls)
            async with aiohttp.ClientSession(connector=connector) as session:
                url = f"https://127.0.0.1:{port}/apis/carbonaware.io/v1/carbonawarejobs"
                async with session.get(url) as response:
                    assert response.connection is not None
                    # asyncio's own buffer: what each open connection keeps resident
                    protocol = response.connection.transport._ssl_protocol  # type: ignore[union-attr]
                    buffer = len(protocol._ssl_buffer)
                    return await response.read(), buffer
        finally:
            await runner.cleanup()

    received, buffer = asyncio.run(scenario())
    assert received == body
    assert buffer == TLS_READ_BUFFER_BYTES < 256 * 1024
