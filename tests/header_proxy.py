"""A reverse proxy on loopback that sets one request header on every HTTP request and WebSocket
handshake it forwards: what a team's trusted proxy does in front of the app (docs/team.md).

Browsers' test hooks cannot stand in for it: Chromium before 151 leaves headers added through
DevTools (Playwright's ``extra_http_headers``) off WebSocket handshakes, and Streamlit reads the
user from the WebSocket's headers. Built on aiohttp (the dev extra).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import aiohttp
from aiohttp import web

# Headers that belong to one connection, not to the request being forwarded.
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "upgrade", "content-length", "host",
              "content-encoding", "sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions",
              "sec-websocket-accept", "sec-websocket-protocol"}  # fmt: skip


SESSION = web.AppKey("session", aiohttp.ClientSession)


def _app(upstream: str, name: str, value: str) -> web.Application:
    def forwarded(headers) -> dict[str, str]:
        out = {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP and k.lower() != name.lower()}
        out[name] = value
        return out

    async def handle(request: web.Request) -> web.StreamResponse:
        session: aiohttp.ClientSession = request.app[SESSION]
        if request.headers.get("Upgrade", "").lower() == "websocket":
            protocols = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
            async with session.ws_connect(f"ws://{upstream}{request.rel_url}", headers=forwarded(request.headers),
                                          protocols=protocols, max_msg_size=0) as outbound:  # fmt: skip
                inbound = web.WebSocketResponse(protocols=[outbound.protocol] if outbound.protocol else (),
                                                max_msg_size=0)  # fmt: skip
                await inbound.prepare(request)

                async def pump(source, sink) -> None:
                    async for message in source:
                        if message.type == aiohttp.WSMsgType.BINARY:
                            await sink.send_bytes(message.data)
                        elif message.type == aiohttp.WSMsgType.TEXT:
                            await sink.send_str(message.data)
                        else:
                            break
                    await sink.close()

                await asyncio.gather(pump(inbound, outbound), pump(outbound, inbound), return_exceptions=True)
                return inbound
        async with session.request(request.method, f"http://{upstream}{request.rel_url}",
                                   headers=forwarded(request.headers), data=await request.read(),
                                   allow_redirects=False) as response:  # fmt: skip
            body = await response.read()
            headers = {k: v for k, v in response.headers.items() if k.lower() not in HOP_BY_HOP}
            return web.Response(status=response.status, body=body, headers=headers)

    async def open_session(app: web.Application) -> None:
        app[SESSION] = aiohttp.ClientSession(auto_decompress=True)

    async def close_session(app: web.Application) -> None:
        await app[SESSION].close()

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    app.on_startup.append(open_session)
    app.on_cleanup.append(close_session)
    return app


@contextmanager
def header_proxy(upstream_port: int, port: int, name: str, value: str) -> Iterator[str]:
    """Serve on ``127.0.0.1:port``, forwarding to ``127.0.0.1:upstream_port`` with the header
    ``name: value`` set; yields the proxy's URL and stops it afterwards."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(_app(f"127.0.0.1:{upstream_port}", name, value))
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
