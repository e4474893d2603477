"""whisper_streaming's TCP protocol (``whisper_online_server.py``), for many clients at once.

A client connects and sends raw PCM, signed 16-bit little-endian, 16 kHz,
mono (``arecord -f S16_LE -c1 -r 16000 -t raw | nc HOST 43007``). The server
writes one line per commit, exactly as whisper_online_server does:
``"%1.0f %1.0f %s" % (beg_ms, end_ms, text)`` and ``\\n``, where ``beg`` is
never before the previous line's ``end`` and ``text`` is the commit's text as
the backend gave it. When the client shuts its sending side (``nc -N``, or
``shutdown(SHUT_WR)``), the worker flushes, the last lines are written and the
server closes the connection (whisper_online_server left ``finish()`` out).

Each connection is its own stream, so any number of clients are served at
once (up to ``max_connections``; one more is closed at once, counted). A
sender faster than real time is simply read more slowly. The protocol has no
way to send a key, so it is only served on a loopback host (config check).
A connection silent for ``idle_timeout`` or older than ``max_session_s`` is
closed (counted).
"""

from __future__ import annotations

import asyncio
import socket
import time

import numpy as np

from .bus_stream import BusStream
from .context import Admitted, Gateway, Refused
from .results import Final, Results, SegmentDone

READ_BYTES = 65536
TICK_S = 0.02  # timers (held commits, limits) are looked at this often
FLUSH_TIMEOUT_S = 30.0


async def serve(gw: Gateway, sock: socket.socket) -> asyncio.AbstractServer:
    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            admitted = gw.admit()
        except Refused:
            writer.close()
            return
        try:
            await TcpSession(gw, admitted, reader, writer).run()
        finally:
            gw.hub.release()
            writer.close()

    return await asyncio.start_server(client, sock=sock)


def line(beg_ms: float, end_ms: float, text: str) -> str:
    return "%1.0f %1.0f %s" % (beg_ms, end_ms, text)  # noqa: UP031 - whisper_online_server's exact format


class TcpSession:
    def __init__(self, gw: Gateway, admitted: Admitted, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter):
        self.gw, self.adm, self.reader, self.writer = gw, admitted, reader, writer
        self.results = Results(admitted.pool)
        self.stream = BusStream(gw.hub, "tcp", self.results)
        self.last_end: float | None = None
        self.last_data = time.monotonic()
        self.eof_at: float | None = None
        self.gone = False
        self._odd = b""

    async def run(self) -> None:
        reading = asyncio.create_task(self._read())
        try:
            while not self.gone:
                item = await self.stream.next_message(TICK_S)
                now = time.monotonic()
                out = self.results.feed(item[0], item[1], now) if item else []
                for topic, msg in self.stream.drain_messages():
                    out += self.results.feed(topic, msg, now)
                for r in out + self.results.tick(now):
                    if isinstance(r, Final) and r.text.strip():
                        await self._write(r)
                    elif isinstance(r, SegmentDone) and self.eof_at is not None:
                        return
                if self._expired(now):
                    return
        finally:
            reading.cancel()
            self.stream.close()

    def _expired(self, now: float) -> bool:
        cfg = self.gw.cfg
        if self.eof_at is not None:
            if now - self.eof_at > FLUSH_TIMEOUT_S:
                self.gw.hub.reject("flush_timeout")
                return True
            return False
        if self.gw.hub.shutdown is not None and self.gw.hub.shutdown.is_set():
            self._end()
            return False
        for reason, over in (("idle", now - self.last_data > cfg.idle_timeout),
                             ("duration", now - self.adm.started > cfg.max_session_s)):
            if over:
                self.gw.hub.reject(reason)
                return True
        return False

    def _end(self) -> None:
        if self.eof_at is None:
            self.eof_at = time.monotonic()
            if self.stream.end_segment() is None:
                self.gone = True  # no audio at all: nothing to wait for

    async def _read(self) -> None:
        try:
            while self.eof_at is None:
                while not self.results.progress.may_send(self.stream.seconds, time.monotonic()):
                    self.last_data = time.monotonic()
                    await asyncio.sleep(TICK_S)
                data = await self.reader.read(READ_BYTES)
                if not data:
                    self._end()
                    return
                self.last_data = time.monotonic()
                data = self._odd + data
                usable = len(data) - len(data) % 2
                self._odd = data[usable:]
                if usable:
                    self.stream.push(np.frombuffer(data[:usable], dtype="<i2").copy())
        except (ConnectionError, OSError):
            self.gone = True

    async def _write(self, r: Final) -> None:
        beg, end = r.start * 1000, r.end * 1000
        if self.last_end is not None:
            beg = max(beg, self.last_end)
        self.last_end = end
        try:
            self.writer.write((line(beg, end, r.text) + "\n").encode("utf-8", errors="replace"))
            await self.writer.drain()
        except (ConnectionError, OSError):
            self.gone = True
