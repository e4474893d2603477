"""``openai-api`` backend: any OpenAI-compatible ``/v1/audio/transcriptions`` server.

The audio is sent as an in-memory 16-bit PCM WAV file, asking for
``verbose_json`` with word and segment timestamps. Word times are used when
the server returns them (OpenAI does); a server that returns segment times
only (faster-whisper-server, for one) gets word times spread over each
segment; a reply with text only becomes one segment over the whole audio.

It speaks HTTP through the standard library (one kept-alive connection, no
extra package), so it is always available; the ``openai`` extra exists for
older install commands and pulls nothing in. Proxies are not used: the
connection goes straight to ``base_url``.

Options (keyword arguments, ``-o key=value``, or the worker's ``options:``):

``base_url``      server root ending in ``/v1`` (default: ``$OPENAI_BASE_URL``,
                  else ``https://api.openai.com/v1``)
``api_key_env``   name of the environment variable holding the key
                  (``OPENAI_API_KEY``); with no key set, none is sent
``model``         model name sent to the server (default: the model given to
                  the constructor, else ``whisper-1``)
``timeout``       seconds to wait for one request (30)
``temperature``   sampling temperature sent with each request (server default)
``extra_fields``  mapping of additional form fields a server needs
"""

from __future__ import annotations

import http.client
import io
import json
import os
import re
import time
import uuid
import wave
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from ..audio import float_to_pcm16
from ..base import SAMPLING_RATE, ASRBase, BackendError, Capabilities, check_audio
from ..result import Segment, SegmentResults, compression_ratio, spread_words

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "whisper-1"
DEFAULT_TIMEOUT = 30.0
BODY_PREVIEW = 200  # characters of an error body quoted in messages


def _one_line(text: str, limit: int = BODY_PREVIEW) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= limit else text[:limit] + "..."


# -- HTTP ----------------------------------------------------------------------
class HTTPClient:
    """A minimal keep-alive HTTP(S) client bound to one server.

    Every failure becomes a :class:`BackendError` whose message is a single
    line naming the URL; an idle connection the server has closed is
    reopened once, transparently.
    """

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = DEFAULT_TIMEOUT):
        parts = urlsplit(base_url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BackendError(f"openai-api: base_url {base_url!r} is not an http(s) URL")
        self.base_url = base_url.rstrip("/")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port
        self.prefix = parts.path.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def _connect(self, timeout: float) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        return cls(self.host, self.port, timeout=timeout)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(
        self, method: str, path: str, body: bytes | None = None,
        headers: dict | None = None, timeout: float | None = None,
    ) -> tuple[int, str, bytes]:
        """Send one request; returns ``(status, content_type, body)``."""
        hdrs = {"Accept": "application/json", "User-Agent": "voxpipe-openai-api"}
        if self.api_key:
            hdrs["Authorization"] = f"Bearer {self.api_key}"
        hdrs.update(headers or {})
        url = self.url(path)
        timeout = self.timeout if timeout is None else timeout
        for attempt in (1, 2):
            reused = self._conn is not None
            if self._conn is None:
                self._conn = self._connect(timeout)
            self._conn.timeout = timeout
            if self._conn.sock is not None:
                self._conn.sock.settimeout(timeout)
            try:
                self._conn.request(method, self.prefix + "/" + path.lstrip("/"), body=body, headers=hdrs)
                resp = self._conn.getresponse()
                data = resp.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self.close()
                if reused and attempt == 1:
                    continue  # the server dropped an idle kept-alive connection
                raise BackendError(f"openai-api: {method} {url} failed: {type(exc).__name__}: {exc}") from exc
            except TimeoutError as exc:
                self.close()
                raise BackendError(f"openai-api: {method} {url} timed out after {timeout:g}s") from exc
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
                raise BackendError(f"openai-api: cannot reach {url}: {reason}") from exc
            if resp.getheader("Connection", "").lower() == "close":
                self.close()
            return resp.status, resp.getheader("Content-Type", "") or "", data
        raise AssertionError("unreachable")  # pragma: no cover


def encode_multipart(fields: list[tuple[str, str]], files: list[tuple[str, str, str, bytes]]) -> tuple[bytes, str]:
    """``multipart/form-data`` body for ``fields`` (name, value) and ``files``
    (name, filename, content type, bytes); returns ``(body, content_type)``."""
    boundary = "voxpipe-" + uuid.uuid4().hex
    out = io.BytesIO()
    for name, value in fields:
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode())
        out.write(str(value).encode("utf-8") + b"\r\n")
    for name, filename, ctype, data in files:
        out.write(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            f"Content-Type: {ctype}\r\n\r\n".encode()
        )
        out.write(data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def wav_bytes(audio: np.ndarray, rate: int = SAMPLING_RATE) -> bytes:
    """Float32 mono audio as a 16-bit PCM WAV file, in memory."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(float_to_pcm16(audio))
    return buf.getvalue()


# -- response parsing ----------------------------------------------------------
def _num(value: Any, default: float = 0.0) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return default
    return out if np.isfinite(out) else default


def _word_tuple(item: dict) -> tuple[float, float, str]:
    text = str(item.get("word", item.get("text", ""))).strip()
    return (float(item["start"]), float(item["end"]), text)


def clean_words(words: list[tuple], duration: float) -> list[tuple[float, float, str]]:
    """Drop empty words and make times in range and non-decreasing."""
    out: list[tuple[float, float, str]] = []
    last_beg = 0.0
    for beg, end, text in words:
        text = text.strip()
        if not text:
            continue
        beg = min(max(beg, last_beg, 0.0), duration)
        end = min(max(end, beg), duration)
        out.append((round(beg, 3), round(end, 3), text))
        last_beg = beg
    return out


def _assign_words(segments: list[dict], words: list[tuple]) -> list[list[tuple]]:
    """Give each top-level word to the last segment that starts before its midpoint."""
    starts = [_num(s.get("start")) for s in segments]
    groups: list[list[tuple]] = [[] for _ in segments]
    for w in words:
        mid = (w[0] + w[1]) / 2
        idx = 0
        for i, start in enumerate(starts):
            if start <= mid + 1e-6:
                idx = i
        groups[idx].append(w)
    return groups


def parse_response(content_type: str, body: bytes, duration: float) -> list[Segment]:
    """Turn a transcription reply (verbose JSON, plain JSON or text) into segments.

    Raises :class:`ValueError` with a short reason when the reply is malformed.
    """
    text_body = body.decode("utf-8", errors="replace")
    looks_json = "json" in content_type.lower() or text_body.lstrip().startswith("{")
    if not looks_json:
        return _text_only(text_body, duration)
    try:
        payload = json.loads(text_body)
    except json.JSONDecodeError as exc:
        raise ValueError(f"reply is not valid JSON ({exc.msg} at char {exc.pos})") from exc
    if not isinstance(payload, dict):
        raise ValueError(f"reply is a JSON {type(payload).__name__}, expected an object")
    segments = payload.get("segments")
    top_words = payload.get("words")
    if segments is not None and not isinstance(segments, list):
        raise ValueError("'segments' is not a list")
    if top_words is not None and not isinstance(top_words, list):
        raise ValueError("'words' is not a list")
    try:
        words = [_word_tuple(w) for w in top_words or []]
        if not segments:
            if words:
                seg = {"start": words[0][0], "end": words[-1][1], "text": " ".join(w[2] for w in words)}
                return [_segment(seg, words, duration)]
            if "text" not in payload:
                raise ValueError("reply has neither 'segments', 'words' nor 'text'")
            return _text_only(str(payload.get("text") or ""), duration)
        groups = _assign_words(segments, words) if words else [None] * len(segments)
        out = []
        for seg, group in zip(segments, groups, strict=False):
            if not isinstance(seg, dict):
                raise ValueError("a segment is not an object")
            if group is None and isinstance(seg.get("words"), list):
                group = [_word_tuple(w) for w in seg["words"]]
            made = _segment(seg, group, duration)
            if made.words:
                out.append(made)
        return out
    except (KeyError, TypeError) as exc:
        raise ValueError(f"a segment or word lacks a usable field ({type(exc).__name__}: {exc})") from exc


def _segment(seg: dict, words: list[tuple] | None, duration: float) -> Segment:
    start = min(max(float(seg["start"]), 0.0), duration)
    end = min(max(float(seg["end"]), start), duration)
    text = str(seg.get("text") or "").strip()
    if words is None:
        words = spread_words(start, end, text)
    words = clean_words(words, duration)
    if not text:
        text = " ".join(w[2] for w in words)
    return Segment(
        start=start,
        end=end,
        text=text,
        words=words,
        no_speech_prob=_num(seg.get("no_speech_prob")),
        avg_logprob=_num(seg.get("avg_logprob")),
        compression_ratio=_num(seg.get("compression_ratio"), compression_ratio(text)),
    )


def _text_only(text: str, duration: float) -> list[Segment]:
    text = text.strip()
    if not text:
        return []
    return [Segment(0.0, duration, text, spread_words(0.0, duration, text), compression_ratio=compression_ratio(text))]


# -- the backend ---------------------------------------------------------------
class OpenAIAPIASR(SegmentResults, ASRBase):
    """Transcribes by POSTing audio to an OpenAI-compatible HTTP server."""

    backend_name = "openai-api"
    sep = " "  # words carry no leading space
    # Word times are approximate when the server gives segment times only, and
    # quality signals are present only when the server reports them.
    capabilities = Capabilities(word_timestamps=False, quality_signals=False)

    def load_model(self, modelsize=None, cache_dir=None, model_dir=None):
        opts = self.options
        self.base_url = str(opts.get("base_url") or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        key_env = str(opts.get("api_key_env") or "OPENAI_API_KEY")
        api_key = os.environ.get(key_env) or None
        self.api_model = str(opts.get("model") or modelsize or DEFAULT_MODEL)
        self.timeout = float(opts.get("timeout", DEFAULT_TIMEOUT))
        temperature = opts.get("temperature")
        self.temperature = None if temperature is None else float(temperature)
        extra = opts.get("extra_fields") or {}
        if not isinstance(extra, dict):
            raise ValueError("openai-api option extra_fields must be a mapping")
        self.extra_fields = {str(k): str(v) for k, v in extra.items()}
        self.response_format = "verbose_json"
        client = HTTPClient(self.base_url, api_key, self.timeout)
        self._check_server(client, key_env if api_key is None else None)
        return client

    def _check_server(self, client: HTTPClient, missing_key_env: str | None) -> None:
        """Fail at start, in one line, when the server cannot be reached or refuses us."""
        t0 = time.monotonic()
        status, _ctype, body = client.request("GET", "models", timeout=min(self.timeout, 10.0))
        if status in (401, 403):
            hint = f" (environment variable {missing_key_env} is not set)" if missing_key_env else ""
            raise BackendError(
                f"openai-api: {client.url('models')} refused the API key: HTTP {status}: "
                f"{_one_line(body.decode('utf-8', 'replace'))}{hint}"
            )
        if 200 <= status < 300:
            try:
                listed = [m.get("id") for m in json.loads(body).get("data", [])]
            except (ValueError, AttributeError, TypeError):
                listed = []
            if listed and self.api_model not in listed:
                self.log.warning("model %r is not among the server's models %s", self.api_model, listed[:10])
        else:  # up, but without a model list (404/405 are common on local servers)
            self.log.info("%s answered HTTP %d; server is up", client.url("models"), status)
        self.log.info(
            "server %s reachable in %.2fs; model %r", self.base_url, time.monotonic() - t0, self.api_model
        )

    @property
    def model_name(self) -> str:
        return self.api_model

    def describe(self) -> dict:
        return {"backend": self.backend_name, "model": self.api_model, "base_url": self.base_url}

    def _fields(self, task: str, init_prompt: str) -> list[tuple[str, str]]:
        fields = [("model", self.api_model), ("response_format", self.response_format)]
        if self.response_format == "verbose_json" and task == "transcribe":
            fields += [("timestamp_granularities[]", "word"), ("timestamp_granularities[]", "segment")]
        if self.original_language and task == "transcribe":
            fields.append(("language", self.original_language))
        if init_prompt:
            fields.append(("prompt", init_prompt))
        if self.temperature is not None:
            fields.append(("temperature", f"{self.temperature:g}"))
        fields += list(self.extra_fields.items())
        return fields

    def transcribe(self, audio, init_prompt: str = "") -> list[Segment]:
        audio = check_audio(audio)
        duration = len(audio) / SAMPLING_RATE
        if not len(audio):
            return []
        task = self.transcribe_kargs.get("task", "transcribe")
        path = "audio/translations" if task == "translate" else "audio/transcriptions"
        wav = wav_bytes(audio)
        status, ctype, body = self._post(path, self._fields(task, init_prompt), wav)
        if status == 400 and self.response_format == "verbose_json" and b"response_format" in body:
            self.log.warning("server does not support verbose_json; falling back to json (no timestamps)")
            self.response_format = "json"
            status, ctype, body = self._post(path, self._fields(task, init_prompt), wav)
        url = self.model.url(path)
        if not 200 <= status < 300:
            raise BackendError(
                f"openai-api: POST {url} -> HTTP {status}: {_one_line(body.decode('utf-8', 'replace'))}"
            )
        try:
            return parse_response(ctype, body, duration)
        except ValueError as exc:
            raise BackendError(
                f"openai-api: malformed reply from {url}: {exc}; body: {_one_line(body.decode('utf-8', 'replace'))}"
            ) from exc

    def _post(self, path: str, fields: list[tuple[str, str]], wav: bytes) -> tuple[int, str, bytes]:
        body, ctype = encode_multipart(fields, [("file", "audio.wav", "audio/wav", wav)])
        t0 = time.perf_counter()
        out = self.model.request("POST", path, body=body, headers={"Content-Type": ctype})
        self.log.debug("POST %s: HTTP %d in %.2fs", path, out[0], time.perf_counter() - t0)
        return out

    def use_vad(self) -> None:
        self.log.info("use_vad() has no effect on openai-api: the server decides about non-speech")

