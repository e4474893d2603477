"""The web actor: ``voxpipe web``, a browser page that captures and displays.

Each browser session that presses Start on the page becomes its own stream
on the bus (``audio.web-<id>``: 16 kHz mono int16 in 100 ms frames, with
``t`` and ``wall0`` like the capture actor's microphone), and its page shows
that stream's transcript live, read from ``transcript.*`` and ``partial.*``;
the list of workers comes from their heartbeats (``status.*``). Stop, a
closed tab or a lost connection ends the stream with ``eos``.

Threads: the bus sockets belong to the actor's main thread (the usual
:class:`workers.base.Actor` loop); the page (Gradio + FastRTC on uvicorn)
runs in a second thread. They meet only in the lock-protected
:class:`workers.web_streams.WebHub`: the page pushes audio into it, and the
loop's :meth:`WebActor.tick` publishes what has queued up.

It binds 127.0.0.1 by default. Binding anything else (``--host 0.0.0.0``)
needs an access token (``--token`` or ``web.token``), which the page asks
for before it streams. On the first SIGTERM/SIGINT every open browser stream
gets ``eos`` and no new one is accepted; the page server stops last.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time

from pipeline import messages as m
from pipeline.config import WebConfig
from pipeline.errors import RuntimeFailure, UsageError
from pipeline.roster import Believer
from pipeline.security import is_loopback_host

from .base import Actor, actor_config, add_actor_arguments, run_actor
from .web_streams import WebHub

START_TIMEOUT_S = 60.0


class PageServer:
    """uvicorn serving an ASGI app from its own thread, on a socket bound up front."""

    def __init__(self, app, host: str, port: int, **options):
        """``options``: more ``uvicorn.Config`` settings (e.g. ``ws_max_size``)."""
        import uvicorn

        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host, port))
        except OSError as exc:
            self.sock.close()
            raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                                timeout_graceful_shutdown=3, **options)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, name="voxpipe-web-page", daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            self.server.run(sockets=[self.sock])
        except BaseException as exc:  # noqa: BLE001 - reported by start()
            self.error = exc

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeFailure(f"the page server did not start: {self.error or 'timed out'}")
            time.sleep(0.05)

    def stop(self, timeout: float = 5.0) -> None:
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(timeout)
        self.sock.close()


class WebActor(Actor):
    role = "web"

    def __init__(self, name, bus, wcfg: WebConfig, settings, config=None):
        super().__init__(name, bus, config)
        self.wcfg = wcfg
        self.settings = settings
        workers = config.workers if config is not None else ()
        pools = tuple(dict.fromkeys(w.pool_name for w in workers))
        self.hub = WebHub(pools, {w.pool_name: w.language for w in workers})
        self.page: PageServer | None = None
        self.url = ""
        self.poll_ms = 20
        self.counters.update({"streams_total": 0, "audio_seconds": 0.0, "denied": 0, "dropped_frames": 0})
        self.believer = Believer(bus.heartbeat_interval)

    def subscriptions(self):
        return ["transcript.", "partial.", "status."]

    def setup(self) -> None:
        from .web_page import build_app, limit_ice_addresses

        addresses = self.settings.ice_addresses or (("127.0.0.1",) if is_loopback_host(self.wcfg.host) else ())
        if addresses:
            limit_ice_addresses(addresses)
        # Gradio prints debugging lines on stdout (one per WebRTC signalling call); this actor says
        # everything it has to say on stderr, so they go nowhere
        sys.stdout = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - for the process's lifetime
        app = build_app(self.hub, self.settings)
        self.page = PageServer(app, self.wcfg.host, self.wcfg.port)
        self.page.start()
        host = f"[{self.wcfg.host}]" if ":" in self.wcfg.host else self.wcfg.host
        self.url = f"http://{host}:{self.page.port}/"
        self.log.info("page at %s%s", self.url, " (access token required)" if self.settings.token else "")

    def handle(self, topic: str, msg: m.Message) -> None:
        # transcripts count only while their worker's heartbeat lists the stream (pipeline.roster)
        now = time.monotonic()
        if isinstance(msg, m.Heartbeat):
            self.hub.on_message(topic, msg)
            believed = self.believer.heartbeat(msg, now)
        else:
            believed = self.believer.offer(topic, msg, now)
        for t, believed_msg in believed:
            self.hub.on_message(t, believed_msg)

    def tick(self, now: float) -> None:
        for t, believed_msg in self.believer.expire(time.monotonic()):
            self.hub.on_message(t, believed_msg)
        self.counters.update(self.believer.counts.as_dict())
        self._publish_outgoing()
        self.counters["streams_active"] = len(self.hub.open_streams())
        for k in ("streams_total", "denied"):
            self.counters[k] = self.hub.counters[k]
        self.counters["audio_seconds"] = round(self.hub.counters["audio_seconds"], 2)
        self.counters["dropped_frames"] = self.hub.counters["dropped_frames"]

    def _publish_outgoing(self) -> None:
        for out in self.hub.take_outgoing():
            topic = m.audio_topic(out.stream)
            seq = self.pub.seq(topic)
            if out.kind == "audio":
                self.publish(topic, m.Audio(stream=out.stream, seq=seq, t=out.t, wall0=out.wall0, pcm=out.pcm,
                                            language=out.language, task=out.task))
            else:
                self.publish(topic, m.EndOfStream(stream=out.stream, seq=seq, t=out.t))
                self.pub.seq.forget(topic)
                self.note_ended(out.stream)
                self.log.info("stream %s ended at %.1fs: eos", out.stream, out.t)

    def drain(self) -> None:
        n = self.hub.close_all()
        if n:
            self.log.info("stop signal: ending %d browser stream(s)", n)
        self._publish_outgoing()

    def drained(self) -> bool:
        return self.hub.pending_outgoing() == 0

    def info(self) -> dict:
        return {"url": self.url, "streams": self.hub.open_streams(), "token": bool(self.settings.token)}

    def teardown(self) -> None:
        if self.page is not None:
            self.page.stop()


# -- command line ------------------------------------------------------------------------------------------
def register(sub):
    """The ``web`` subcommand (the page as an actor); returns its parser (``apps.web`` adds the pipeline flags)."""
    p = sub.add_parser("web", help="serve the browser page: microphone in, live transcript out (FastRTC + Gradio)")
    add_actor_arguments(p, "web")
    p.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1; anything else needs a token)")
    p.add_argument("--port", type=int, default=None, help="port to listen on (default 9880; 0 = any free port)")
    p.add_argument("--token", default=None, help="access token the page asks for before it streams")
    p.add_argument("--max-sessions", type=int, default=None, help="browser streams at once (default 16)")
    p.add_argument("--ice-server", action="append", default=[], metavar="URL",
                   help="STUN/TURN server for browsers behind NAT (repeatable; default none: host candidates only)")
    p.add_argument("--ice-address", action="append", default=[], metavar="ADDR",
                   help="local address offered for the media (repeatable; default 127.0.0.1 when listening on "
                        "loopback, else every interface's)")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    def build():
        cfg = actor_config(args, "web", {"enabled": True, "name": args.name, "host": args.host, "port": args.port,
                                         "token": args.token, "max_sessions": args.max_sessions})
        wcfg = cfg.web
        try:
            import fastrtc  # noqa: F401
            import gradio  # noqa: F401
        except ImportError as exc:
            raise UsageError(f"{exc.name} is not installed: pip install 'voxpipe[web]'") from None
        from .web_page import PageSettings

        settings = PageSettings(token=wcfg.token or None, max_sessions=wcfg.max_sessions,
                                ice_servers=tuple(args.ice_server), ice_addresses=tuple(args.ice_address))
        return WebActor(wcfg.name, cfg.bus, wcfg, settings, cfg)

    try:
        return run_actor(build)
    except OSError as exc:  # the page's port
        raise RuntimeFailure(str(exc)) from None
