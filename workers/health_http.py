"""A small HTTP listener beside an actor's bus loop: ``/healthz``, ``/readyz`` and extra routes.

For process managers and Kubernetes probes (off unless the config's ``health:`` section turns it
on, see :class:`pipeline.config_schema.HealthConfig`). It runs on a daemon thread of the standard
library's :class:`http.server.ThreadingHTTPServer`, started before the actor's heavy set-up, so a
probe gets an answer while a worker is still loading its model:

* ``GET /healthz``: 200 ``ok`` while the process is up (the listener answers).
* ``GET /readyz``: 200 once the actor is ready (model loaded, bus handshake done) and its loop is
  still turning (a heartbeat went out within the liveness timeout), else 503 with the reason.
* more routes from the actor (the metrics actor serves ``/metrics`` here).

Answers are plain text; the listener never touches the actor's sockets, only reads its state.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger("voxpipe.health")

#: path -> callable returning (status, content type, body)
Route = Callable[[], "tuple[int, str, bytes]"]
TEXT = "text/plain; charset=utf-8"


class HealthServer:
    def __init__(self, host: str, port: int, ready: Callable[[], tuple[bool, str]],
                 routes: dict[str, Route] | None = None):
        self.ready = ready
        self.routes: dict[str, Route] = {"/healthz": self._healthz, "/readyz": self._readyz, **(routes or {})}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                route = server.routes.get(self.path.split("?", 1)[0])
                if route is None:
                    status, ctype, body = 404, TEXT, b"not found\n"
                else:
                    try:
                        status, ctype, body = route()
                    except Exception as exc:  # noqa: BLE001 - a probe never takes the actor down
                        log.warning("error answering %s: %s", self.path, exc)
                        status, ctype, body = 500, TEXT, f"error: {exc}\n".encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format, *args):  # noqa: A002 - probes every few seconds are not news
                pass

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                       name="health-http", daemon=True)

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    def start(self) -> HealthServer:
        self.thread.start()
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _healthz(self) -> tuple[int, str, bytes]:
        return 200, TEXT, b"ok\n"

    def _readyz(self) -> tuple[int, str, bytes]:
        ok, why = self.ready()
        return (200, TEXT, b"ready\n") if ok else (503, TEXT, f"not ready: {why}\n".encode())
