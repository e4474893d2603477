"""Deepgram-compatible live streaming: ``ws://HOST:PORT/v1/listen``.

A client connects with Deepgram's query parameters, sends binary audio frames
and the text messages ``KeepAlive``, ``Finalize`` and ``CloseStream``, and
gets Deepgram's replies: ``Results`` (interim ones from the worker's partials
when ``interim_results=true``; ``is_final`` ones from its commits, with
``speech_final`` on the last one before a pause the VAD heard and
``from_finalize`` on what a ``Finalize`` or ``CloseStream`` flushed),
``SpeechStarted`` (``vad_events=true``), ``UtteranceEnd``
(``utterance_end_ms``) and ``Metadata`` before a ``CloseStream`` closes the
connection (1000). What each parameter does here: docs/compatibility.md.

Refusals before the upgrade are HTTP statuses with a JSON body and a
``dg-error`` header (400 bad parameters, 401 bad key, 429 too many
connections, 503 no worker up). After it, close codes: 1002 ``DATA-0000``
audio that cannot be decoded; 1008 ``VOX-RATE`` / ``VOX-DURATION`` over a
limit; 1009 a message over ``max_frame_bytes``; 1011 ``NET-0001`` nothing from
the client for ``idle_timeout`` (10 s, as Deepgram); 1011 ``NET-0000`` the
worker did not finish within 30 s of a ``CloseStream``; 1001 the server is
stopping (after its last results and ``Metadata``). A text message that is
not JSON or has an unknown ``type`` gets an ``Error`` message and the stream
goes on.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
import time
import uuid
from dataclasses import dataclass

from starlette.responses import JSONResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from .access import RateLimit
from .audio_in import CONTAINER_ENCODINGS, RAW_ENCODINGS, AudioError, ContainerAudio, RawAudio
from .bus_stream import BusStream
from .context import Admitted, Gateway, Refused
from .results import Final, Interim, Results, SegmentDone, SpeechStarted, TurnEnd, WorkerError

FLUSH_TIMEOUT_S = 30.0
TICK_S = 0.02  # timers (held commits, limits) are looked at this often
PUNCTUATION = ".,?!;:\"'()[]{}…。，？！"


class OptionError(ValueError):
    pass


def query_flag(query, name: str, default: bool) -> bool:
    value = query.get(name)
    if value is None:
        return default
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise OptionError(f"{name}={value!r} is not true or false")


def _int(query, name: str, default: int | None, low: int, high: int) -> int | None:
    value = query.get(name)
    if value is None:
        return default
    try:
        n = int(value)
    except ValueError:
        raise OptionError(f"{name}={value!r} is not a whole number") from None
    if not low <= n <= high:
        raise OptionError(f"{name}={n} is out of range ({low}..{high})")
    return n


@dataclass(frozen=True)
class ListenOptions:
    encoding: str | None = None  # None: a container (WebM, Ogg, ...), told apart by its bytes
    sample_rate: int = 16000
    channels: int = 1
    language: str | None = None
    model: str | None = None
    interim_results: bool = False
    endpointing: bool = True  # speech_final at the VAD's pauses; false: never
    utterance_end_ms: int | None = None
    vad_events: bool = False
    punctuate: bool = False
    smart_format: bool = False

    @classmethod
    def parse(cls, query) -> ListenOptions:
        encoding = query.get("encoding") or None
        if encoding is not None and encoding not in RAW_ENCODINGS and encoding not in CONTAINER_ENCODINGS:
            known = ", ".join([*RAW_ENCODINGS, *CONTAINER_ENCODINGS])
            raise OptionError(f"encoding {encoding!r} is not supported (supported: {known}, or none for a container)")
        rate = _int(query, "sample_rate", None, 1000, 384000)
        if encoding in RAW_ENCODINGS and rate is None:
            raise OptionError(f"sample_rate is required with encoding={encoding}")
        if query_flag(query, "multichannel", False):
            raise OptionError("multichannel=true is not supported: send one channel (or several, mixed to one)")
        channels = _int(query, "channels", 1, 1, 8) or 1
        if encoding in ("mulaw", "alaw") and channels > 2:
            raise OptionError(f"channels={channels}: {encoding} is served with 1 or 2 channels")
        endpointing = query.get("endpointing", "true").lower() != "false"
        if endpointing and query.get("endpointing", "true").lower() != "true":
            _int(query, "endpointing", None, 0, 60000)  # a number of ms: accepted (the VAD decides pauses)
        return cls(
            encoding=encoding, sample_rate=rate or 16000, channels=channels,
            language=query.get("language"), model=query.get("model"),
            interim_results=query_flag(query, "interim_results", False), endpointing=endpointing,
            utterance_end_ms=_int(query, "utterance_end_ms", None, 1, 60000),
            vad_events=query_flag(query, "vad_events", False), punctuate=query_flag(query, "punctuate", False),
            smart_format=query_flag(query, "smart_format", False),
        )


def error_response(status: int, message: str, request_id: str) -> JSONResponse:
    """Deepgram's error reply, before a WebSocket upgrade and from the REST endpoint alike."""
    code = {400: "Bad Request", 401: "INVALID_AUTH", 413: "PAYLOAD_TOO_LARGE", 429: "TOO_MANY_REQUESTS",
            504: "TIMEOUT"}.get(status, "SERVICE_UNAVAILABLE")
    body = {"err_code": code, "err_msg": message, "request_id": request_id}
    return JSONResponse(body, status_code=status, headers={"dg-error": message, "dg-request-id": request_id})


def result_words(words, punctuated: bool) -> list[dict]:
    """Deepgram's word items: ``word`` lower case without marks, ``punctuated_word`` as written when asked."""
    out = []
    for w in words:
        item = {"word": w.text.strip(PUNCTUATION).lower() or w.text, "start": round(w.beg, 3),
                "end": round(w.end, 3), "confidence": 1.0}
        if punctuated:
            item["punctuated_word"] = w.text
        out.append(item)
    return out


def transcript_of(items: list[dict], punctuated: bool) -> str:
    return " ".join(w["punctuated_word"] if punctuated else w["word"] for w in items)


def model_identity(admitted: Admitted) -> tuple[str, str, str]:
    """The model's name, architecture and a stable uuid, as Deepgram's ``model_info`` lists them."""
    model = admitted.worker.model or admitted.pool
    return model, admitted.worker.backend or "voxpipe", str(uuid.uuid5(uuid.NAMESPACE_URL,
                                                                     f"voxpipe:{admitted.pool}:{model}"))


async def deny(ws: WebSocket, status: int, message: str, request_id: str) -> None:
    await ws.send_denial_response(error_response(status, message, request_id))


async def listen(ws: WebSocket, gw: Gateway) -> None:
    """The key first, then the query parameters, then a worker and room (each refusal counted)."""
    try:
        proto = gw.check_key(ws.headers, ws.scope.get("subprotocols", ()))
        try:
            opts = ListenOptions.parse(ws.query_params)
        except OptionError as exc:
            gw.hub.reject("options")
            raise Refused("options", str(exc)) from None
        admitted = gw.admit(model=opts.model, language=opts.language, subprotocol=proto)
    except Refused as exc:
        await deny(ws, exc.status, exc.message, str(uuid.uuid4()))
        return
    try:
        await ws.accept(subprotocol=admitted.subprotocol)
        await ListenSession(ws, gw, opts, admitted).run()
    finally:
        gw.hub.release()


class ListenSession:
    def __init__(self, ws: WebSocket, gw: Gateway, opts: ListenOptions, admitted: Admitted):
        self.ws, self.gw, self.opts, self.adm = ws, gw, opts, admitted
        self.cfg = gw.cfg
        self.results = Results(admitted.pool)
        self.stream = BusStream(gw.hub, "dg", self.results)
        self.sha = hashlib.sha256()
        self.created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")
        self.model, self.arch, self.model_uuid = model_identity(admitted)
        self.send_lock = asyncio.Lock()
        self.last_client = time.monotonic()
        self.close_requested = False  # CloseStream (or shutdown): nothing more is taken from the client
        self.closing: str | None = None  # ... and the last segment has ended: "close" or "shutdown"
        self.closing_since = 0.0
        self.done: tuple[int, str] | None = None  # close code and reason, once decided
        self.client_gone = False
        self.last_interim = ""
        self.utterance_word_end: float | None = None  # a turn ended after this word: UtteranceEnd is due
        self.last_utterance_end: float | None = None
        self.audio_failed: AudioError | None = None
        if opts.encoding in RAW_ENCODINGS:
            self.audio = RawAudio(opts.encoding, opts.sample_rate, opts.channels, self.stream.push)
        else:
            self.audio = ContainerAudio(self.stream.push, self._audio_error)

    # -- the connection ------------------------------------------------------------------------------
    async def run(self) -> None:
        reader = asyncio.create_task(self._read())
        try:
            while self.done is None:
                item = await self.stream.next_message(TICK_S)
                now = time.monotonic()
                out = self.results.feed(item[0], item[1], now) if item else []
                for topic, msg in self.stream.drain_messages():
                    out += self.results.feed(topic, msg, now)
                out += self.results.tick(now)
                for r in out:
                    await self._result(r)
                await self._utterance_end()
                await self._check(now)
        finally:
            reader.cancel()
            if isinstance(self.audio, ContainerAudio):
                self.audio.abort()
            self.stream.close()
            if not self.client_gone and self.done is not None:
                try:
                    await self.ws.close(self.done[0], self.done[1])
                except Exception:  # noqa: BLE001 - the client may be gone meanwhile
                    pass

    async def _check(self, now: float) -> None:
        if self.client_gone:
            self.done = (1000, "")
        elif self.audio_failed is not None:
            self._fail("audio", 1002, f"DATA-0000: {self.audio_failed}")
        elif self.closing is not None:
            if not self.results.waiting():
                await self._metadata()
                self.done = (1000, "") if self.closing == "close" else (1001, "server shutting down")
            elif now - self.closing_since > FLUSH_TIMEOUT_S:
                self._fail("flush_timeout", 1011, "NET-0000: the worker did not finish in time")
        elif self.close_requested:
            pass  # the decoder is handing over its last audio
        elif self.gw.hub.shutdown is not None and self.gw.hub.shutdown.is_set():
            await self._begin_close("shutdown")
        elif now - self.last_client > self.cfg.idle_timeout:
            self._fail("idle", 1011, "NET-0001: no audio or message received within the timeout window")
        elif now - self.adm.started > self.cfg.max_session_s:
            self._fail("duration", 1008, f"VOX-DURATION: connection longer than {self.cfg.max_session_s:.0f} s")

    def _fail(self, reason: str, code: int, message: str) -> None:
        self.gw.hub.reject(reason)
        self.done = (code, message[:120])

    async def _read(self) -> None:
        rate = RateLimit(self.cfg.max_messages_per_s, time.monotonic())
        try:
            while self.done is None:
                while not self.close_requested and not self.results.progress.may_send(self.stream.seconds,
                                                                                  time.monotonic()):
                    self.last_client = time.monotonic()  # held back by us, not idle
                    await asyncio.sleep(TICK_S)
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    if message.get("code") == 1009:
                        self.gw.hub.reject("frame_size")
                    self.client_gone = True
                    return
                now = time.monotonic()
                self.last_client = now
                if not rate.allow(now):
                    self._fail("rate", 1008, f"VOX-RATE: more than {self.cfg.max_messages_per_s:g} messages/s")
                    return
                if self.close_requested:
                    continue  # after CloseStream nothing more is taken
                data, text = message.get("bytes"), message.get("text")
                if data is not None:
                    await self._audio(data)
                elif text is not None:
                    await self._control(text)
        except (WebSocketDisconnect, RuntimeError):
            self.client_gone = True

    async def _audio(self, data: bytes) -> None:
        if not data:  # Deepgram's old way to close
            await self._begin_close("close")
            return
        self.sha.update(data)
        try:
            self.audio.feed(data)
        except AudioError as exc:
            self.audio_failed = exc

    def _audio_error(self, exc: AudioError) -> None:
        self.audio_failed = exc

    async def _control(self, text: str) -> None:
        try:
            msg = json.loads(text)
            kind = msg.get("type") if isinstance(msg, dict) else None
        except ValueError:
            self.gw.hub.reject("json")
            await self._send({"type": "Error", "variant": "SchemaError",
                              "description": "a text message must be JSON with a 'type'", "message": text[:200]})
            return
        if kind == "KeepAlive":
            return
        if kind == "Finalize":
            await self._finalize()
        elif kind == "CloseStream":
            await self._begin_close("close")
        else:
            self.gw.hub.reject("message_type")
            await self._send({"type": "Error", "variant": "SchemaError",
                              "description": f"unknown message type {kind!r} (KeepAlive, Finalize, CloseStream)",
                              "message": text[:200]})

    async def _finalize(self) -> None:
        if isinstance(self.audio, RawAudio):
            await self.audio.finish()
        if self.stream.end_segment() is None:  # nothing since the last flush
            await self._result(Final(self.stream.seconds, self.stream.seconds, "", from_finalize=True))

    async def _begin_close(self, why: str) -> None:
        if self.close_requested:
            return
        self.close_requested = True
        await self.audio.finish()
        self.stream.end_segment()
        self.closing, self.closing_since = why, time.monotonic()

    # -- replies --------------------------------------------------------------------------------------------
    async def _send(self, obj: dict) -> None:
        async with self.send_lock:
            try:
                await self.ws.send_text(json.dumps(obj, ensure_ascii=False))
            except Exception:  # noqa: BLE001 - the client went away
                self.client_gone = True

    async def _result(self, r) -> None:
        o = self.opts
        if isinstance(r, Final):
            speech_final = r.speech_final and o.endpointing
            await self._send(self._results(r, True, speech_final, r.from_finalize))
            if r.words:
                self.last_interim = ""
        elif isinstance(r, Interim):
            if o.interim_results and r.text != self.last_interim:
                self.last_interim = r.text
                await self._send(self._results(r, False, False, False))
        elif isinstance(r, SpeechStarted):
            self.utterance_word_end = None
            if o.vad_events:
                await self._send({"type": "SpeechStarted", "channel": [0, 1], "timestamp": round(r.t, 3)})
        elif isinstance(r, TurnEnd):
            if o.utterance_end_ms and r.last_word_end is not None and r.last_word_end != self.last_utterance_end:
                self.utterance_word_end = r.last_word_end
        elif isinstance(r, WorkerError):
            await self._send({"type": "Error", "variant": "WorkerError", "description": r.message[:500]})
        elif isinstance(r, SegmentDone):
            pass

    async def _utterance_end(self) -> None:
        w, ms = self.utterance_word_end, self.opts.utterance_end_ms
        if w is not None and ms and self.stream.seconds >= w + ms / 1000:
            self.utterance_word_end, self.last_utterance_end = None, w
            await self._send({"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": round(w, 3)})

    def _results(self, r, is_final: bool, speech_final: bool, from_finalize: bool) -> dict:
        shown = self.opts.punctuate or self.opts.smart_format
        words = result_words(r.words, shown)
        transcript = transcript_of(words, shown)
        return {
            "type": "Results", "channel_index": [0, 1], "duration": round(max(r.end - r.start, 0.0), 3),
            "start": round(r.start, 3), "is_final": is_final, "speech_final": speech_final,
            "from_finalize": from_finalize,
            "channel": {"alternatives": [{"transcript": transcript, "confidence": 1.0 if words else 0.0,
                                          "words": words}]},
            "metadata": {"request_id": self.adm.request_id, "model_uuid": self.model_uuid,
                         "model_info": {"name": self.model, "version": "voxpipe", "arch": self.arch}},
        }

    async def _metadata(self) -> None:
        await self._send({
            "type": "Metadata", "transaction_key": "deprecated", "request_id": self.adm.request_id,
            "sha256": self.sha.hexdigest(), "created": self.created, "duration": round(self.stream.seconds, 3),
            "channels": self.opts.channels, "models": [self.model_uuid],
            "model_info": {self.model_uuid: {"name": self.model, "version": "voxpipe", "arch": self.arch}},
        })
