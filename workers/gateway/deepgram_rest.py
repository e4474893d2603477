"""Deepgram-compatible pre-recorded transcription: ``POST /v1/listen``.

The request body is the audio itself: a file in any container FFmpeg reads
(WAV, MP3, Ogg, FLAC, WebM, ...), or headerless audio with ``encoding`` and
``sample_rate`` as for live streaming (the official SDKs'
``listen.v1.media.transcribe_file``). It goes through the pool as one upload
(:mod:`.uploads`, at the worker's speed), and the reply has Deepgram's shape:
``metadata`` (``request_id``, ``sha256`` of the body, ``created``,
``duration``, ``channels``, ``models``, ``model_info``) and ``results.channels[0]
.alternatives[0]`` with ``transcript``, ``confidence`` and ``words``. The same
query parameters as live streaming apply (``model``, ``language``,
``punctuate``/``smart_format`` for ``punctuated_word`` and the written
transcript, ``encoding``/``sample_rate``/``channels``), and:

* ``utterances=true``: ``results.utterances``, the words split where the gap
  between two words is at least ``utt_split`` seconds (0.8, Deepgram's
  default);
* ``paragraphs=true``: ``alternatives[0].paragraphs``, one paragraph per
  utterance, its sentences split after ``.``, ``?`` and ``!``.

Refused with Deepgram's error body (``err_code``, ``err_msg``,
``request_id``): 400 for a JSON body (a ``url`` to fetch: the gateway fetches
nothing), a ``callback``, bad parameters, an empty body or audio that cannot be
decoded; 401 a bad key; 413 a body over ``max_upload_bytes``; 429 too many
connections; 503 no worker up; 504 the worker did not finish in time. The
other parameters (diarization, keywords, redaction, ...) are ignored
(docs/compatibility.md).
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import uuid
from dataclasses import dataclass

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from pipeline.formats import Word, join_words

from .audio_in import RAW_ENCODINGS, SR, AudioError, RawAudio, decode_file
from .context import Gateway, Refused
from .deepgram import (
    ListenOptions,
    OptionError,
    error_response,
    model_identity,
    query_flag,
    result_words,
    transcript_of,
)
from .uploads import run_file, timed_words, upload_timeout

SENTENCE_END = (".", "?", "!", "…", "。", "？", "！")


@dataclass(frozen=True)
class FileOptions:
    listen: ListenOptions
    utterances: bool = False
    utt_split: float = 0.8
    paragraphs: bool = False

    @classmethod
    def parse(cls, query) -> FileOptions:
        if query.get("callback"):
            raise OptionError("callback is not supported: the transcript is the reply to this request")
        listen = ListenOptions.parse(query)
        split = query.get("utt_split")
        try:
            utt_split = 0.8 if split is None else float(split)
        except ValueError:
            raise OptionError(f"utt_split={split!r} is not a number of seconds") from None
        if not 0.0 < utt_split <= 60.0:
            raise OptionError(f"utt_split={utt_split:g} is out of range (0..60 s)")
        return cls(listen, utterances=query_flag(query, "utterances", False), utt_split=utt_split,
                   paragraphs=query_flag(query, "paragraphs", False))


def split_utterances(words: list[Word], gap: float) -> list[list[Word]]:
    """Runs of words with less than ``gap`` seconds between one word's end and the next one's start."""
    out: list[list[Word]] = []
    for w in words:
        if out and w.beg - out[-1][-1].end < gap:
            out[-1].append(w)
        else:
            out.append([w])
    return out


def split_sentences(words: list[Word]) -> list[list[Word]]:
    out: list[list[Word]] = [[]]
    for w in words:
        out[-1].append(w)
        if w.text.rstrip("\"')]»”").endswith(SENTENCE_END):
            out.append([])
    return [s for s in out if s]


def paragraphs(utterances: list[list[Word]]) -> dict:
    items = []
    for utt in utterances:
        sentences = [{"text": join_words(s), "start": round(s[0].beg, 3), "end": round(s[-1].end, 3)}
                     for s in split_sentences(utt)]
        items.append({"sentences": sentences, "num_words": len(utt), "start": round(utt[0].beg, 3),
                      "end": round(utt[-1].end, 3)})
    transcript = "".join("\n" + " ".join(s["text"] for s in p["sentences"]) + "\n" for p in items)
    return {"transcript": transcript, "paragraphs": items}


async def read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None when it is longer than ``limit`` bytes (read no further than that)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def decode_body(data: bytes, opts: ListenOptions) -> np.ndarray:
    if opts.encoding not in RAW_ENCODINGS:  # none, or a container's name: the file says what it is
        return await asyncio.to_thread(decode_file, data)
    parts: list[np.ndarray] = []
    raw = RawAudio(opts.encoding, opts.sample_rate, opts.channels, parts.append)
    raw.feed(data)
    await raw.finish()
    return np.concatenate(parts) if parts else np.zeros(0, dtype="<i2")


async def listen_file(request: Request, gw: Gateway) -> Response:
    request_id = str(uuid.uuid4())
    cfg = gw.cfg
    try:
        gw.check_key(request.headers)
        try:
            opts = FileOptions.parse(request.query_params)
        except OptionError as exc:
            gw.hub.reject("options")
            raise Refused("options", str(exc)) from None
    except Refused as exc:
        return error_response(exc.status, exc.message, request_id)
    if request.headers.get("content-type", "").split(";")[0].strip().lower() == "application/json":
        gw.hub.reject("options")
        return error_response(400, "a URL source is not supported: send the audio itself as the request body "
                                   "(transcribe_file)", request_id)
    data = await read_body(request, cfg.max_upload_bytes)
    if data is None:
        gw.hub.reject("upload_size")
        return error_response(413, f"the body is larger than {cfg.max_upload_bytes} bytes", request_id)
    if not data:
        gw.hub.reject("audio")
        return error_response(400, "the request has no audio: send the file as the body", request_id)
    try:
        admitted = gw.admit(model=opts.listen.model, language=opts.listen.language)
    except Refused as exc:
        return error_response(exc.status, exc.message, request_id)
    try:
        try:
            pcm = await decode_body(data, opts.listen)
        except AudioError as exc:
            gw.hub.reject("audio")
            return error_response(400, f"the audio cannot be decoded: {exc}", request_id)
        duration = len(pcm) / SR
        if duration > cfg.max_session_s:
            gw.hub.reject("duration")
            return error_response(400, f"the audio is {duration:.0f} s long (at most {cfg.max_session_s:.0f} s)",
                                  request_id)
        created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")
        try:
            finals = [f async for f in run_file(gw, admitted, pcm, upload_timeout(duration), kind="dgf")]
        except TimeoutError:
            gw.hub.reject("flush_timeout")
            return error_response(504, "the worker did not finish in time", request_id)
    finally:
        gw.hub.release()
    model, arch, model_uuid = model_identity(admitted)
    words = timed_words(finals, duration)
    shown = opts.listen.punctuate or opts.listen.smart_format
    items = result_words(words, shown)
    alternative: dict = {"transcript": transcript_of(items, shown), "confidence": 1.0 if items else 0.0,
                         "words": items}
    utterances = split_utterances(words, opts.utt_split)
    if opts.paragraphs:
        alternative["paragraphs"] = paragraphs(utterances)
    results: dict = {"channels": [{"alternatives": [alternative]}]}
    if opts.utterances:
        results["utterances"] = []
        for utt in utterances:
            u_items = result_words(utt, shown)
            results["utterances"].append({
                "start": round(utt[0].beg, 3), "end": round(utt[-1].end, 3), "confidence": 1.0, "channel": 0,
                "transcript": transcript_of(u_items, shown), "words": u_items,
                "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{request_id}:{utt[0].beg:.3f}")),
            })
    metadata = {"transaction_key": "deprecated", "request_id": request_id,
                "sha256": hashlib.sha256(data).hexdigest(), "created": created, "duration": round(duration, 3),
                "channels": 1, "models": [model_uuid],
                "model_info": {model_uuid: {"name": model, "version": "voxpipe", "arch": arch}}}
    return JSONResponse({"metadata": metadata, "results": results}, headers={"dg-request-id": request_id})
