"""``voxpipe serve``: the gateway actor, the bus side of the compatible endpoints.

Threads, as in the web actor: the bus sockets belong to the actor's main
thread (the usual :class:`workers.base.Actor` loop); the ASGI app (Starlette
on uvicorn, with the whisper_streaming TCP listener in the same event loop)
runs in a second thread. They meet only in the lock-protected
:class:`.hub.GatewayHub`: connections queue audio into it, :meth:`GatewayActor.tick`
publishes it, and :meth:`GatewayActor.handle` routes what comes back.

Subscriptions, all prefixes of this gateway's own stream ids (``<name>-...``):
``transcript.<pool>.<name>-``, ``partial.<pool>.<name>-`` for each pool it
routes to, ``speech.<name>-`` for the VAD's marks, and ``status.`` to know
which pools have a worker up.

Why Starlette: the endpoints speak other APIs' wire formats and error shapes
byte for byte (Deepgram's ``dg-error`` denials, OpenAI's ``error`` objects),
so FastAPI's request models and its own validation errors would be in the way;
Starlette is the ASGI toolkit FastAPI is built on (already installed with the
web extra, as is uvicorn), with WebSocket denial responses, multipart forms
(python-multipart) and a lifespan hook for the TCP listener.

First SIGTERM/SIGINT: no new connections (503); every open one flushes its
audio (``eos``), gets its last results, ``Metadata`` and a 1001 close; then
the server stops.
"""

from __future__ import annotations

import logging
import socket

from pipeline import messages as m
from pipeline.config import GatewayConfig
from pipeline.config_schema import gateway_stream_prefix
from pipeline.errors import RuntimeFailure, UsageError

from ..base import Actor, actor_config, add_actor_arguments, run_actor
from .context import Gateway
from .hub import GatewayHub


def bind_tcp(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port} (TCP): {exc.strerror or exc}") from None
    sock.listen(64)
    sock.setblocking(False)
    return sock


class GatewayActor(Actor):
    role = "gateway"

    def __init__(self, name, bus, gcfg: GatewayConfig, config=None):
        super().__init__(name, bus, config)
        self.gcfg = gcfg
        self.hub = GatewayHub(gateway_stream_prefix(name), gcfg.max_connections)
        self.gw = Gateway(self.hub, gcfg)
        self.server = None
        self.tcp_sock: socket.socket | None = None
        self.url = ""
        self.poll_ms = 10  # audio queued by clients goes out within this
        self.drain_timeout = 40.0
        self.counters.update(self.hub.stats())

    def subscriptions(self):
        p = self.hub.prefix
        subs = [f"speech.{p}", "status."]
        for pool in self.gcfg.pools():
            subs += [f"transcript.{pool}.{p}", f"partial.{pool}.{p}"]
        return subs

    def setup(self) -> None:
        from ..web import PageServer
        from .app import build_app

        # uvicorn's sans-I/O WebSocket protocol logs this after every denial response it has sent correctly
        logging.getLogger("uvicorn.error").addFilter(
            lambda record: "returned without completing handshake" not in record.getMessage())

        g = self.gcfg
        if g.tcp_port is not None:
            self.tcp_sock = bind_tcp(g.host, g.tcp_port)
        app = build_app(self.gw, self.tcp_sock)
        self.server = PageServer(app, g.host, g.port, ws_max_size=g.max_frame_bytes, ws_ping_interval=20.0,
                                 ws_ping_timeout=20.0)
        self.server.start()
        host = f"[{g.host}]" if ":" in g.host else g.host
        self.url = f"http://{host}:{self.server.port}"
        tcp = f", whisper_streaming TCP on {g.host}:{self.tcp_sock.getsockname()[1]}" if self.tcp_sock else ""
        self.log.info("serving %s/v1/listen, /v1/audio/transcriptions, /v1/realtime%s; pool %s%s", self.url,
                      tcp, g.pool, " (API keys required)" if g.keys else "")

    def handle(self, topic: str, msg: m.Message) -> None:
        self.hub.on_message(topic, msg)

    def tick(self, now: float) -> None:
        for out in self.hub.take_outgoing():
            topic = m.audio_topic(out.stream)
            seq = self.pub.seq(topic)
            if out.kind == "audio":
                self.publish(topic, m.Audio(stream=out.stream, seq=seq, t=out.t, wall0=out.wall0, pcm=out.pcm))
            else:
                self.publish(topic, m.EndOfStream(stream=out.stream, seq=seq, t=out.t))
                self.pub.seq.forget(topic)
                self.note_ended(out.stream)  # listed in info.ended: the VAD believes this eos
        stats = self.hub.stats()
        self.counters.update(stats)
        self.counters["streams_active"] = stats["connections_active"]

    def drain(self) -> None:
        self.log.info("stop signal: closing %d connection(s)", self.hub.active)
        self.hub.begin_shutdown()

    def drained(self) -> bool:
        return self.hub.active == 0 and self.hub.pending_outgoing() == 0

    def info(self) -> dict:
        g = self.gcfg
        return {"url": self.url, "tcp_port": self.tcp_sock.getsockname()[1] if self.tcp_sock else None,
                "pool": g.pool, "translate_pool": g.translate_pool, "keys": bool(g.keys),
                "connections": self.hub.active, "streams": self.hub.open_streams()}

    def teardown(self) -> None:
        if self.server is not None:
            self.server.stop()
        if self.tcp_sock is not None:
            self.tcp_sock.close()


# -- command line ------------------------------------------------------------------------------------------
def register(sub) -> None:
    p = sub.add_parser("serve", help="Deepgram-, OpenAI- and whisper_streaming-compatible endpoints on the bus")
    add_actor_arguments(p, "gateway")
    p.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1; anything else needs a key)")
    p.add_argument("--port", type=int, default=None, help="HTTP/WebSocket port (default 8000; 0 = any free port)")
    p.add_argument("--tcp", type=int, default=None, metavar="PORT",
                   help="also serve whisper_streaming's TCP protocol on this port (its default: 43007)")
    p.add_argument("--pool", default=None, help="whose transcripts clients get (default: the config's first worker)")
    p.add_argument("--api-key", action="append", default=None, metavar="KEY",
                   help="a key clients must send (repeatable; required beyond loopback)")
    p.set_defaults(func=run)


def run(args) -> int:
    def build():
        try:
            import python_multipart  # noqa: F401 - for the OpenAI uploads
            import starlette  # noqa: F401
            import uvicorn  # noqa: F401
        except ImportError as exc:
            raise UsageError(f"{exc.name} is not installed: pip install 'voxpipe[serve]'") from None
        cfg = actor_config(args, "gateway", {"enabled": True, "name": args.name, "host": args.host,
                                             "port": args.port, "tcp_port": args.tcp, "pool": args.pool,
                                             "api_keys": args.api_key})
        return GatewayActor(cfg.gateway.name, cfg.bus, cfg.gateway, cfg)

    try:
        return run_actor(build)
    except OSError as exc:  # a port
        raise RuntimeFailure(str(exc)) from None
