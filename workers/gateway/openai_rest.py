"""OpenAI-compatible transcription REST: ``POST /v1/audio/transcriptions`` and ``/v1/audio/translations``.

The multipart upload (``file``, ``model``, ``language``, ``prompt``,
``response_format``, ``temperature``, ``timestamp_granularities[]``,
``stream``) is decoded with PyAV (any format FFmpeg reads), then streamed
through the pool at full speed: as fast as the VAD and the worker take it
(:class:`.results.Progress` keeps the worker's backlog under 20 s of speech),
not at real time. The response is built from the commits:

* ``json``: ``{"text", "usage"}``; ``text``: the text; ``srt`` / ``vtt``:
  subtitles from :mod:`pipeline.formats` (the sinks' cue rules);
* ``verbose_json``: ``task``, ``language``, ``duration``, ``text``,
  ``segments`` (the cues) and, with ``timestamp_granularities[]=word``,
  ``words`` (monotonic, inside the audio);
* ``stream=true``: server-sent events ``transcript.text.delta`` per commit,
  then ``transcript.text.done``.

Errors have OpenAI's shape, ``{"error": {"message", "type", "param",
"code"}}``: 400 bad request or undecodable file, 401 bad key, 413 a file over
``max_upload_bytes``, 429 too many connections, 503 no worker up, 504 the
worker did not finish in time.
"""

from __future__ import annotations

import asyncio
import json
import math

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from pipeline.formats import CueBuilder, join_commit_texts, render_srt, render_vtt

from .audio_in import SR, AudioError, decode_file
from .context import Admitted, Gateway, Refused
from .results import Final
from .uploads import run_file, timed_words, upload_timeout

FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
ERROR_TYPES = {401: ("invalid_request_error", "invalid_api_key"), 429: ("requests", "rate_limit_exceeded"),
               503: ("server_error", "service_unavailable")}


def error(status: int, message: str, param: str | None = None, code: str | None = None) -> JSONResponse:
    kind, default_code = ERROR_TYPES.get(status, ("invalid_request_error", None))
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code or default_code}},
                        status_code=status)


async def transcriptions(request: Request, gw: Gateway) -> Response:
    return await _handle(request, gw, translate=False)


async def translations(request: Request, gw: Gateway) -> Response:
    return await _handle(request, gw, translate=True)


async def _handle(request: Request, gw: Gateway, translate: bool) -> Response:
    try:
        gw.check_key(request.headers)
    except Refused as exc:
        return error(exc.status, exc.message)
    cfg = gw.cfg
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > cfg.max_upload_bytes + (1 << 20):
        gw.hub.reject("upload_size")
        return error(413, f"the request is larger than {cfg.max_upload_bytes} bytes", "file")
    try:
        form = await request.form(max_files=1, max_fields=64, max_part_size=1 << 20)
    except Exception as exc:  # noqa: BLE001 - malformed multipart of any kind
        gw.hub.reject("form")
        return error(400, f"could not parse the multipart form: {exc}")
    upload = form.get("file")
    fmt = str(form.get("response_format") or "json")
    granularities = {str(v) for k in ("timestamp_granularities[]", "timestamp_granularities")
                     for v in form.getlist(k)}
    stream = str(form.get("stream") or "false").lower() == "true"
    if upload is None or isinstance(upload, str):
        gw.hub.reject("form")
        return error(400, "you must provide a file", "file")
    if fmt not in FORMATS:
        gw.hub.reject("form")
        return error(400, f"response_format {fmt!r} is not one of {', '.join(FORMATS)}", "response_format")
    if granularities - {"word", "segment"}:
        gw.hub.reject("form")
        return error(400, "timestamp_granularities must be word and/or segment", "timestamp_granularities")
    data = await upload.read()
    if len(data) > cfg.max_upload_bytes:
        gw.hub.reject("upload_size")
        return error(413, f"the file is larger than {cfg.max_upload_bytes} bytes", "file")
    language = str(form.get("language") or "") or None
    try:
        admitted = gw.admit(model=str(form.get("model") or "") or None, language=language, translate=translate)
    except Refused as exc:
        return error(exc.status, exc.message)
    handed_over = False  # to the event stream, which releases the connection when it ends
    try:
        try:
            pcm = await asyncio.to_thread(decode_file, data)
        except AudioError as exc:
            gw.hub.reject("audio")
            return error(400, f"Invalid file format: {exc}", "file", "invalid_value")
        duration = len(pcm) / SR
        if duration > cfg.max_session_s:
            gw.hub.reject("duration")
            return error(400, f"the audio is {duration:.0f} s long (at most {cfg.max_session_s:.0f} s)", "file")
        timeout = upload_timeout(duration)
        if stream:
            handed_over = True
            return StreamingResponse(_events(gw, admitted, pcm, timeout), media_type="text/event-stream")
        try:
            finals = [f async for f in run_file(gw, admitted, pcm, timeout, "oa")]
        except TimeoutError:
            gw.hub.reject("flush_timeout")
            return error(504, "the worker did not finish in time")
        return render(finals, fmt, granularities, duration, "translate" if translate else "transcribe",
                      language or admitted.worker.language or "en")
    finally:
        if not handed_over:
            gw.hub.release()


async def _events(gw: Gateway, admitted: Admitted, pcm: np.ndarray, timeout: float):
    texts = []
    try:
        async for f in run_file(gw, admitted, pcm, timeout, "oa"):
            texts.append(f.text)
            yield f"data: {json.dumps({'type': 'transcript.text.delta', 'delta': f.text})}\n\n"
        done = {"type": "transcript.text.done", "text": join_commit_texts(texts), "usage": _usage(len(pcm) / SR)}
        yield f"data: {json.dumps(done)}\n\n"
    finally:
        gw.hub.release()


def _usage(duration: float) -> dict:
    return {"type": "duration", "seconds": math.ceil(duration)}


def render(finals: list[Final], fmt: str, granularities: set, duration: float, task: str,
           language: str) -> Response:
    text = join_commit_texts(f.text for f in finals)
    words = timed_words(finals, duration)
    if fmt == "text":
        return PlainTextResponse(text + "\n")
    cues = CueBuilder()
    done = cues.add(words) + cues.flush()
    if fmt == "srt":
        return PlainTextResponse(render_srt(done), media_type="application/x-subrip")
    if fmt == "vtt":
        return PlainTextResponse(render_vtt(done), media_type="text/vtt")
    if fmt == "json":
        return JSONResponse({"text": text, "usage": _usage(duration)})
    body: dict = {"task": task, "language": language, "duration": round(duration, 3), "text": text}
    if not granularities or "segment" in granularities:
        body["segments"] = [{"id": i, "seek": 0, "start": round(c.beg, 3), "end": round(c.end, 3),
                             "text": " " + c.text, "tokens": [], "temperature": 0.0, "avg_logprob": 0.0,
                             "compression_ratio": 0.0, "no_speech_prob": 0.0} for i, c in enumerate(done)]
    if "word" in granularities:
        body["words"] = [{"word": w.text, "start": round(w.beg, 3), "end": round(w.end, 3)} for w in words]
    body["usage"] = _usage(duration)
    return JSONResponse(body)
