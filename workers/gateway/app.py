"""The gateway's ASGI application (Starlette): one route per compatible endpoint.

| route | protocol |
| --- | --- |
| ``WS /v1/listen`` | Deepgram live streaming (:mod:`.deepgram`) |
| ``POST /v1/listen`` | Deepgram pre-recorded transcription (:mod:`.deepgram_rest`) |
| ``POST /v1/audio/transcriptions``, ``/v1/audio/translations`` | OpenAI REST (:mod:`.openai_rest`) |
| ``WS /v1/realtime`` | OpenAI Realtime transcription (:mod:`.realtime`) |
| ``GET /v1/models`` | the pools, as OpenAI models (clients that list models first) |
| ``GET /health`` | 200 when the default pool has a worker up, else 503 |

The whisper_streaming TCP listener (:mod:`.tcp`) runs in the same event loop,
started and stopped by the app's lifespan.
"""

from __future__ import annotations

import asyncio
import socket
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from . import deepgram, deepgram_rest, openai_rest, realtime, tcp
from .context import Gateway, Refused


def build_app(gw: Gateway, tcp_sock: socket.socket | None = None) -> Starlette:
    @asynccontextmanager
    async def lifespan(app):
        gw.hub.started(asyncio.get_running_loop())
        server = await tcp.serve(gw, tcp_sock) if tcp_sock is not None else None
        try:
            yield
        finally:
            if server is not None:
                server.close()

    async def listen(ws: WebSocket) -> None:
        await deepgram.listen(ws, gw)

    async def listen_file(request: Request):
        return await deepgram_rest.listen_file(request, gw)

    async def rt(ws: WebSocket) -> None:
        await realtime.realtime(ws, gw)

    async def transcriptions(request: Request):
        return await openai_rest.transcriptions(request, gw)

    async def translations(request: Request):
        return await openai_rest.translations(request, gw)

    async def models(request: Request):
        try:
            gw.check_key(request.headers)
        except Refused as exc:
            return openai_rest.error(exc.status, exc.message)
        return JSONResponse({"object": "list", "data": [
            {"id": p, "object": "model", "created": 0, "owned_by": "voxpipe"} for p in gw.cfg.pools()]})

    async def health(request: Request):
        worker = gw.hub.pool_state(gw.cfg.pool)
        body = {"pool": gw.cfg.pool, "ready": worker is not None, "model": worker.model if worker else None,
                "connections": gw.hub.active}
        return JSONResponse(body, status_code=200 if worker is not None else 503)

    return Starlette(routes=[
        WebSocketRoute("/v1/listen", listen),
        Route("/v1/listen", listen_file, methods=["POST"]),
        Route("/v1/audio/transcriptions", transcriptions, methods=["POST"]),
        Route("/v1/audio/translations", translations, methods=["POST"]),
        WebSocketRoute("/v1/realtime", rt),
        Route("/v1/models", models),
        Route("/health", health),
    ], lifespan=lifespan)
