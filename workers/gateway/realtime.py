"""OpenAI Realtime transcription sessions: ``ws://HOST:PORT/v1/realtime?intent=transcription``.

Client events: ``session.update`` (a ``transcription`` session: input format
``audio/pcm`` at any rate, 24 kHz by default, or ``audio/pcmu`` /
``audio/pcma``; ``turn_detection`` ``server_vad`` (or ``semantic_vad``,
served the same way) or ``null``), the beta ``transcription_session.update``,
``input_audio_buffer.append`` (base64 audio), ``.commit`` and ``.clear``.

Server events: ``session.created`` / ``session.updated``; with turn
detection, ``input_audio_buffer.speech_started`` / ``speech_stopped`` at the
VAD's marks, then ``input_audio_buffer.committed`` and
``conversation.item.added`` for the turn; without it, ``committed`` answers a
client's ``commit`` (which flushes the worker: the segment's ``eos``).
``conversation.item.input_audio_transcription.delta`` carries each commit's
text (partials are not sent: a delta cannot be taken back) and ``.completed``
the turn's whole transcript, once the turn's last commit is out. Errors are
OpenAI's ``error`` event, ``{"type": "error", "error": {"type", "code",
"message", "param", "event_id"}}``; the session goes on, except over a limit
(1008) or when the server stops (1001).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import itertools
import json
import time
from collections import deque
from dataclasses import dataclass, field

from starlette.responses import JSONResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from pipeline.formats import join_commit_texts

from .access import RateLimit
from .audio_in import AudioError, RawAudio
from .bus_stream import BusStream
from .context import Admitted, Gateway, Refused
from .results import Final, Results, SegmentDone, SpeechStarted, SpeechStopped, TurnEnd, WorkerError

TICK_S = 0.02  # timers (held commits, limits) are looked at this often
FORMATS = {"audio/pcm": "linear16", "audio/pcmu": "mulaw", "audio/pcma": "alaw"}
BETA_FORMATS = {"pcm16": "audio/pcm", "g711_ulaw": "audio/pcmu", "g711_alaw": "audio/pcma"}
MIN_COMMIT_S = 0.1  # OpenAI's: a commit needs at least 100 ms of audio
UNSUPPORTED = ("response.", "conversation.", "output_audio_buffer.")


@dataclass
class Item:
    id: str
    start: float = 0.0  # connection seconds where its audio begins
    segment: str | None = None  # a client's commit: completed at that segment's end; None: a VAD turn
    texts: list = field(default_factory=list)


async def realtime(ws: WebSocket, gw: Gateway) -> None:
    if ws.query_params.get("intent", "transcription") != "transcription":
        gw.hub.reject("options")
        await ws.send_denial_response(JSONResponse(
            {"error": {"type": "invalid_request_error", "code": "unsupported_intent", "param": "intent",
                       "message": "only transcription sessions are served here (intent=transcription)"}}, 400))
        return
    try:
        admitted = gw.admission(ws.headers, ws.scope.get("subprotocols", ()), model=ws.query_params.get("model"))
    except Refused as exc:
        code = {401: "invalid_api_key", 429: "rate_limit_exceeded"}.get(exc.status, "service_unavailable")
        await ws.send_denial_response(JSONResponse(
            {"error": {"type": "invalid_request_error", "code": code, "message": exc.message, "param": None}},
            exc.status))
        return
    try:
        await ws.accept(subprotocol=admitted.subprotocol)
        await RealtimeSession(ws, gw, admitted).run()
    finally:
        gw.hub.release()


class RealtimeSession:
    def __init__(self, ws: WebSocket, gw: Gateway, admitted: Admitted):
        self.ws, self.gw, self.adm, self.cfg = ws, gw, admitted, gw.cfg
        self.results = Results(admitted.pool)
        self.stream = BusStream(gw.hub, "rt", self.results)
        self.ids = itertools.count(1)
        self.session = {
            "type": "transcription", "id": f"sess_{admitted.request_id.replace('-', '')[:24]}",
            "object": "realtime.transcription_session",
            "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000},
                                "transcription": {"model": admitted.pool, "language": None, "prompt": ""},
                                "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                                                   "silence_duration_ms": 500},
                                "noise_reduction": None}},
            "include": [],
        }
        self.audio = self._decoder()
        self.current: Item | None = None  # audio since the last commit belongs to it
        self.awaiting: deque[Item] = deque()  # committed, transcript not complete yet
        self.last_item: str | None = None
        self.buffered = 0  # samples since the last commit
        self.done: tuple[int, str] | None = None
        self.client_gone = False
        self.send_lock = asyncio.Lock()

    @property
    def vad(self) -> bool:
        return self.session["audio"]["input"]["turn_detection"] is not None

    def _decoder(self) -> RawAudio:
        fmt = self.session["audio"]["input"]["format"]
        rate = int(fmt.get("rate") or (24000 if fmt["type"] == "audio/pcm" else 8000))
        return RawAudio(FORMATS[fmt["type"]], rate, 1, self._pcm)

    def _pcm(self, pcm) -> None:
        self.buffered += len(pcm)
        self.stream.push(pcm)

    def _item(self) -> Item:
        return Item(self._id("item"), self.stream.seconds)

    def _id(self, prefix: str) -> str:
        return f"{prefix}_{self.stream.id[-10:]}{next(self.ids):06d}"

    # -- the connection -------------------------------------------------------------------------------
    async def run(self) -> None:
        await self._send({"type": "session.created", "session": self.session})
        reader = asyncio.create_task(self._read())
        try:
            while self.done is None and not self.client_gone:
                item = await self.stream.next_message(TICK_S)
                now = time.monotonic()
                out = self.results.feed(item[0], item[1], now) if item else []
                for topic, msg in self.stream.drain_messages():
                    out += self.results.feed(topic, msg, now)
                for r in out + self.results.tick(now):
                    await self._result(r)
                if self.gw.hub.shutdown is not None and self.gw.hub.shutdown.is_set() and self.done is None:
                    await self._shutdown()
                elif now - self.adm.started > self.cfg.max_session_s:
                    self._fail("duration", 1008, "VOX-DURATION: the session is over its time limit")
        finally:
            reader.cancel()
            self.stream.close()
            if not self.client_gone and self.done is not None:
                try:
                    await self.ws.close(*self.done)
                except Exception:  # noqa: BLE001
                    pass

    def _fail(self, reason: str, code: int, message: str) -> None:
        self.gw.hub.reject(reason)
        self.done = (code, message)

    async def _shutdown(self) -> None:
        await self.audio.finish()
        self.stream.end_segment()
        deadline = time.monotonic() + 10.0
        while self.results.waiting() and time.monotonic() < deadline:
            item = await self.stream.next_message(TICK_S)
            out = self.results.feed(item[0], item[1], time.monotonic()) if item else []
            for r in out + self.results.tick(time.monotonic()):
                await self._result(r)
        self.done = (1001, "server shutting down")

    async def _read(self) -> None:
        rate = RateLimit(self.cfg.max_messages_per_s, time.monotonic())
        try:
            while self.done is None:
                while not self.results.progress.may_send(self.stream.seconds, time.monotonic()):
                    await asyncio.sleep(TICK_S)
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    if message.get("code") == 1009:
                        self.gw.hub.reject("frame_size")
                    self.client_gone = True
                    return
                if not rate.allow(time.monotonic()):
                    self._fail("rate", 1008, f"VOX-RATE: more than {self.cfg.max_messages_per_s:g} messages/s")
                    return
                await self._event(message.get("text"), message.get("bytes"))
        except (WebSocketDisconnect, RuntimeError):
            self.client_gone = True

    # -- client events ----------------------------------------------------------------------------------
    async def _event(self, text: str | None, data: bytes | None) -> None:
        try:
            event = json.loads(text if text is not None else (data or b"").decode("utf-8"))
            if not isinstance(event, dict):
                raise ValueError("not an object")
        except (ValueError, UnicodeDecodeError):
            return await self._error("json", "invalid_json", "events must be JSON objects")
        kind, eid = event.get("type"), event.get("event_id")
        if kind == "input_audio_buffer.append":
            try:
                self.audio.feed(base64.b64decode(event.get("audio") or "", validate=True))
            except (binascii.Error, ValueError, AudioError) as exc:
                await self._error("audio", "invalid_value", f"audio is not base64 PCM: {exc}", "audio", eid)
        elif kind == "input_audio_buffer.commit":
            await self._commit(eid)
        elif kind == "input_audio_buffer.clear":
            self.stream.end_segment(discard=True)
            self.buffered, self.current = 0, None
            await self._send({"type": "input_audio_buffer.cleared"})
        elif kind in ("session.update", "transcription_session.update"):
            await self._update(event.get("session"), kind, eid)
        elif isinstance(kind, str) and kind.startswith(UNSUPPORTED):
            await self._error("message_type", "unsupported_event",
                              f"{kind} is not served: this is a transcription-only session", "type", eid)
        else:
            await self._error("message_type", "invalid_event", f"unknown event type {kind!r}", "type", eid)

    async def _commit(self, eid) -> None:
        await self.audio.finish()
        if self.buffered < MIN_COMMIT_S * 16000:
            return await self._error("commit_empty", "input_audio_buffer_commit_empty",
                                     f"buffer too small: at least {MIN_COMMIT_S * 1000:.0f} ms of audio is needed",
                                     None, eid)
        item = self.current or self._item()
        item.segment = self.stream.end_segment()
        self.current, self.buffered = None, 0
        await self._committed(item)

    async def _update(self, patch, kind: str, eid) -> None:
        if not isinstance(patch, dict):
            return await self._error("options", "invalid_value", "session must be an object", "session", eid)
        audio_in = self.session["audio"]["input"]
        if kind == "transcription_session.update":  # the beta shape
            beta, given_in = patch, {}
            if "input_audio_transcription" in beta:
                given_in["transcription"] = beta["input_audio_transcription"]
            if "turn_detection" in beta:
                given_in["turn_detection"] = beta["turn_detection"]
            if "input_audio_format" in beta:
                fmt_name = beta["input_audio_format"]
                given_in["format"] = {"type": BETA_FORMATS.get(fmt_name, fmt_name)}
            patch = {"audio": {"input": given_in}}
        elif patch.get("type", "transcription") != "transcription":
            return await self._error("options", "invalid_value", "only type 'transcription' sessions are served",
                                     "session.type", eid)
        new = dict(audio_in)
        given = ((patch.get("audio") or {}).get("input") or {})
        fmt = given.get("format")
        if fmt is not None:
            fmt_type = fmt.get("type") if isinstance(fmt, dict) else None
            if fmt_type not in FORMATS:
                return await self._error("options", "invalid_value",
                                         f"audio format {fmt_type!r} is not one of {', '.join(FORMATS)}",
                                         "session.audio.input.format", eid)
            new["format"] = {"type": fmt_type, "rate": int(fmt.get("rate") or (24000 if fmt_type == "audio/pcm"
                                                                                 else 8000))}
        if "turn_detection" in given:
            td = given["turn_detection"]
            if td is not None and (not isinstance(td, dict) or td.get("type") not in ("server_vad", "semantic_vad")):
                return await self._error("options", "invalid_value", "turn_detection must be server_vad, "
                                         "semantic_vad or null", "session.audio.input.turn_detection", eid)
            new["turn_detection"] = td
        if isinstance(given.get("transcription"), dict):
            new["transcription"] = {**audio_in["transcription"], **given["transcription"]}
        self.session["audio"]["input"] = new
        if new["format"] != audio_in["format"]:
            await self.audio.finish()
            self.audio = self._decoder()
        answer = "session.updated" if kind == "session.update" else "transcription_session.updated"
        await self._send({"type": answer, "session": self.session})

    # -- results ----------------------------------------------------------------------------------------------
    async def _result(self, r) -> None:
        if isinstance(r, SpeechStarted) and self.vad:
            self.current = self.current or self._item()
            await self._send({"type": "input_audio_buffer.speech_started", "audio_start_ms": int(r.t * 1000),
                              "item_id": self.current.id})
        elif isinstance(r, SpeechStopped) and self.vad and self.current is not None:
            item, self.current, self.buffered = self.current, None, 0
            await self._send({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": int(r.t * 1000),
                              "item_id": item.id})
            await self._committed(item)
        elif isinstance(r, Final) and r.text.strip():
            item = next((i for i in self.awaiting if i.segment in (None, r.stream)), None)
            if item is None:
                item = self.current = self.current or self._item()
            item.texts.append(r.text)
            await self._send({"type": "conversation.item.input_audio_transcription.delta", "item_id": item.id,
                              "content_index": 0, "delta": r.text})
        elif isinstance(r, TurnEnd):
            await self._complete(next((i for i in self.awaiting if i.segment is None), None))
        elif isinstance(r, SegmentDone):
            for item in [i for i in self.awaiting if i.segment == r.stream]:
                await self._complete(item)
        elif isinstance(r, WorkerError):
            await self._error("worker", "transcription_failed", r.message[:500], None, None, counted=False)

    async def _committed(self, item: Item) -> None:
        self.awaiting.append(item)
        await self._send({"type": "input_audio_buffer.committed", "item_id": item.id,
                          "previous_item_id": self.last_item})
        await self._send({"type": "conversation.item.added", "previous_item_id": self.last_item,
                          "item": {"id": item.id, "object": "realtime.item", "type": "message", "role": "user",
                                   "status": "completed", "content": [{"type": "input_audio", "transcript": None}]}})
        self.last_item = item.id

    async def _complete(self, item: Item | None) -> None:
        if item is None:
            return
        self.awaiting.remove(item)
        await self._send({"type": "conversation.item.input_audio_transcription.completed", "item_id": item.id,
                          "content_index": 0, "transcript": join_commit_texts(item.texts),
                          "usage": {"type": "duration", "seconds": round(self.stream.seconds - item.start, 3)}})

    async def _error(self, reason: str, code: str, message: str, param: str | None = None, eid=None,
                     counted: bool = True) -> None:
        if counted:
            self.gw.hub.reject(reason)
        await self._send({"type": "error", "error": {"type": "invalid_request_error", "code": code,
                                                     "message": message, "param": param, "event_id": eid}})

    async def _send(self, event: dict) -> None:
        event = {"event_id": self._id("event"), **event}
        async with self.send_lock:
            try:
                await self.ws.send_text(json.dumps(event, ensure_ascii=False))
            except Exception:  # noqa: BLE001 - the client went away
                self.client_gone = True
