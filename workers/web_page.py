"""The browser page of ``voxpipe web``: a Gradio app with a FastRTC microphone.

* The microphone is a FastRTC ``WebRTC`` component in ``send`` mode: each
  browser session that presses Start opens a WebRTC connection, and its
  handler (:class:`BrowserMic`, one copy per connection) pushes the audio into
  the :class:`workers.web_streams.WebHub` as stream ``web-<webrtc id>``.
  FastRTC hands it over already resampled to 16 kHz mono int16. When the
  connection ends (Stop, a closed tab, a lost network) the stream gets ``eos``.
* When an access token is set, the page shows a token field and the handler
  checks it before the first sample goes anywhere: a wrong or missing token
  ends the connection, and nothing reaches the bus.
* One long-lived event per page (an async generator started when the page
  loads) pushes the page's status, its transcript (committed text, then the
  unconfirmed partial in a lighter style) and the download links whenever
  they change (checked every :data:`REFRESH_S`), and keeps the worker and
  language menus in step with the workers' heartbeats. Language picks among workers: the worker menu lists
  the workers of the chosen language (each worker has one fixed language).
* "Speaking" and "Task" say what the page's stream asks of the workers: the language spoken
  (``auto``: detected per utterance) and ``transcribe`` or ``translate`` (into English). They
  travel with every audio frame (``language``, ``task``); workers configured with
  ``language: auto`` and a multilingual model follow them, the others keep their own.
* Downloads (TXT, SRT, JSON) are plain routes, ``/voxpipe/download/...``,
  that need the stream's own secret key, which only its page has.

No ICE servers are configured unless given (``--ice-server``): on loopback
and on a LAN, host candidates are enough, and nothing tries to reach an
outside STUN server. When the page is bound to loopback only, the server's
own ICE candidates are limited to 127.0.0.1 (see :func:`limit_ice_addresses`),
so the media stays on loopback.
"""


import asyncio
import dataclasses
import hmac
import html
import logging
import os
import threading
import time
import warnings
from dataclasses import dataclass

from pipeline import messages as m

from .web_streams import EXPORT_FORMATS, SR, SessionRefused, View, WebHub

log = logging.getLogger("voxpipe.web.page")

REFRESH_S = 0.25  # how often a page's outputs are checked for changes
KEEPALIVE_S = 5.0  # a page gets its outputs at least this often (a closed one is noticed)
ARGS_TIMEOUT_S = 15.0  # how long the handler waits for the page's inputs (the token)
NO_TOKEN_ARGS_S = 5.0  # the same without a token (the language and task are worth a short wait)
EARLY_AUDIO_S = 10.0  # audio kept while the token is being checked
DOWNLOAD_ROUTE = "/voxpipe/download"


@dataclass(frozen=True)
class PageSettings:
    token: str | None = None
    max_sessions: int = 16
    ice_servers: tuple = ()  # STUN/TURN URLs, for browsers and server alike
    ice_addresses: tuple = ()  # local addresses offered for the media (default: see workers.web)
    title: str = "voxpipe"


@dataclass
class Selection:
    """What one page (Gradio session) shows: its microphone's stream, a worker, a language."""

    webrtc_id: str | None = None
    worker: str | None = None
    language: str = "any"
    spoken: str = "auto"  # what the stream asks of the workers
    task: str = "transcribe"


class Pages:
    """The open pages' selections, by Gradio session (events run on several threads)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._pages: dict[str, Selection] = {}

    def open(self, key: str) -> None:
        with self._lock:
            self._pages.setdefault(key, Selection())

    def get(self, key: str) -> Selection | None:
        with self._lock:
            sel = self._pages.get(key)
            return dataclasses.replace(sel) if sel else None

    def update(self, key: str, create: bool = True, **fields) -> None:
        with self._lock:
            sel = self._pages.setdefault(key, Selection()) if create else self._pages.get(key)
            if sel is None:
                return
            for k, v in fields.items():
                setattr(sel, k, v)

    def drop(self, key: str) -> None:
        with self._lock:
            self._pages.pop(key, None)


# the languages offered first under "Speaking" (any other Whisper code may be typed)
SPOKEN = ("auto", "en", "de", "fr", "es", "it", "pt", "nl", "pl", "ru", "uk", "tr", "ar", "hi", "ja", "ko", "zh")
TASKS = (("transcribe", "transcribe"), ("translate into English", "translate"))


def stream_id(webrtc_id: str) -> str:
    return f"web-{webrtc_id}"


def rtc_configuration(ice_servers: tuple) -> dict:
    return {"iceServers": [{"urls": url} for url in ice_servers]}


def limit_ice_addresses(addresses: tuple) -> None:
    """Make aiortc offer only these local addresses as ICE host candidates.

    aioice offers every interface's address but loopback's. A page bound to
    loopback serves browsers on this machine only, so it offers 127.0.0.1
    alone and the media stays on loopback; ``--ice-address`` picks the
    interface(s) of a server with several.
    """
    import aioice.ice

    chosen = list(addresses)
    aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=True: list(chosen)


def token_ok(expected: str | None, given) -> bool:
    if not expected:
        return True
    return isinstance(given, str) and hmac.compare_digest(given.encode(), expected.encode())


# -- the FastRTC handler: one copy per WebRTC connection ------------------------------------------------
def page_choice(spoken: str | None, task: str | None) -> tuple[str, str]:
    """The page's "Speaking" and "Task" as the workers take them: a language code or ``auto``
    (anything else: ``auto``), ``transcribe`` or ``translate`` (anything else: ``transcribe``)."""
    spoken = (spoken or "auto").strip()
    return (spoken if m.valid_language(spoken) else "auto", task if task in m.TASKS else "transcribe")


def _handler_class():
    from fastrtc import AsyncStreamHandler
    from fastrtc.utils import create_message, current_context

    class BrowserMic(AsyncStreamHandler):
        """Audio of one browser session into the hub, once its token is checked."""

        def __init__(self, hub: WebHub, token: str | None):
            super().__init__(expected_layout="mono", input_sample_rate=SR)
            self.hub = hub
            self.token = token
            self.stream: str | None = None
            self.state = "waiting"  # waiting | open | denied | closed
            self._early: list = []
            self._early_samples = 0

        def copy(self) -> "BrowserMic":
            return BrowserMic(self.hub, self.token)

        def _webrtc_id(self) -> str:
            if len(self.latest_args) > 1 and isinstance(self.latest_args[1], str):
                return self.latest_args[1]
            ctx = current_context.get()
            return ctx.webrtc_id if ctx else ""

        async def start_up(self) -> None:
            # Ask the page for its inputs: the answer (a "tick" event) tells the page which
            # stream is its own, and carries the token and what the stream asks of the workers
            # (language spoken, task). The audio that comes meanwhile is kept (EARLY_AUDIO_S), so
            # the first frame already carries the page's choice.
            t0 = time.monotonic()
            try:
                await asyncio.wait_for(self.wait_for_args(), ARGS_TIMEOUT_S if self.token else NO_TOKEN_ARGS_S)
            except (asyncio.TimeoutError, TimeoutError):
                log.warning("a browser connected but its page sent no inputs")
            log.debug("the page sent its inputs after %.2fs", time.monotonic() - t0)
            stream = stream_id(self._webrtc_id())
            args = list(self.latest_args) + [None] * 5
            if not token_ok(self.token, args[2]):
                self._refuse(stream, "access token missing or wrong: not streaming")
                return
            if isinstance(args[3], str) and isinstance(args[4], str):
                self.hub.set_hints(stream, *page_choice(args[3], args[4]))
            try:
                self.hub.open_stream(stream)
            except SessionRefused as exc:
                self._refuse(stream, str(exc))
                return
            self.stream, self.state = stream, "open"
            log.info("browser stream %s opened", stream)
            for rate, samples in self._early:
                self.hub.push_audio(stream, rate, samples)
            self._early = []

        def _refuse(self, stream: str, reason: str) -> None:
            self.state = "denied"
            self._early = []
            self.hub.deny(stream, reason)
            log.warning("browser stream %s refused: %s", stream, reason)
            if self.channel is not None:
                self.channel.send(create_message("error", reason))
                self.channel.send(create_message("end_stream", reason))

        async def receive(self, frame) -> None:
            rate, samples = frame
            if self.state == "open":
                self.hub.push_audio(self.stream, rate, samples)
            elif self.state == "waiting" and self._early_samples < EARLY_AUDIO_S * rate:
                self._early.append((rate, samples.copy()))
                self._early_samples += samples.shape[-1]

        async def emit(self):
            await asyncio.sleep(0.5)  # send-only: nothing goes back but the page's own refreshes

        def shutdown(self) -> None:
            if self.stream and self.hub.close_stream(self.stream):
                log.info("browser stream %s closed", self.stream)
            self.state = "closed"

    return BrowserMic


MIC_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" stroke="white" stroke-width="2" '
    'stroke-linecap="round" stroke-linejoin="round"><rect x="9" y="2" width="6" height="12" rx="3"/>'
    '<path d="M5 10a7 7 0 0 0 14 0"/><line x1="12" y1="17" x2="12" y2="22"/></svg>'
)


def capture_script() -> str:
    """The page's ``<head>`` script that captures from the Start click (workers/web_capture.js)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "web_capture.js")
    with open(path, encoding="utf-8") as f:
        return f"<script>\n{f.read()}\n</script>"


def _mic_icon() -> str:
    """A static microphone icon (a file, as Gradio serves it): lighter than the default wave animation."""
    import tempfile

    path = os.path.join(tempfile.gettempdir(), f"voxpipe-web-mic-{os.getuid()}.svg")
    with open(path, "w", encoding="utf-8") as f:
        f.write(MIC_SVG)
    return path


# -- drawing ---------------------------------------------------------------------------------------------------
CSS = """
#voxpipe-transcript { font-size: 1.3rem; line-height: 1.6; min-height: 7em; padding: .8em 1em;
  border: 1px solid var(--border-color-primary); border-radius: 8px; white-space: pre-wrap; }
#voxpipe-transcript .vp-partial { opacity: .5; font-style: italic; }
#voxpipe-transcript .vp-empty { opacity: .5; }
.vp-pill { display: inline-block; padding: .2em .7em; margin: 0 .4em .3em 0; border-radius: 999px;
  font-size: .9rem; background: #e5e7eb; color: #374151; }
.vp-pill.on { background: #dcfce7; color: #166534; }
.vp-pill.off { background: #fee2e2; color: #991b1b; }
#voxpipe-downloads a { margin-right: 1em; }
body[data-vp-capture="connecting"] #voxpipe-status .vp-idle,
body[data-vp-capture="catching-up"] #voxpipe-status .vp-idle { display: none; }
.vp-live, .vp-live .pending, .vp-live.pending { opacity: 1 !important; }
"""


def _pill(text: str, state: bool | None, extra: str = "") -> str:
    cls = " ".join(c for c in ("vp-pill", "on" if state else ("off" if state is False else ""), extra) if c)
    return f'<span class="{cls}">{html.escape(text)}</span>'


def render_status(v: View, token_required: bool) -> str:
    if v.denied:
        state, conn = "denied", _pill(v.denied, False)
    elif v.stream and v.open:
        state, conn = "open", _pill("connected", True)
    elif v.stream:
        state, conn = "ended", _pill("stream ended", None)
    else:
        hint = "enter the access token, then press Start" if token_required else "press Start to stream your microphone"
        state, conn = "idle", _pill(f"not connected: {hint}", None, "vp-idle")
    if v.listening:
        listen = _pill(f"listening · {v.seconds:.1f} s", True)
    else:
        listen = _pill("not listening", False if v.open else None)
    if v.worker is None:
        worker = _pill("no worker running", False)
    elif v.worker.ready and v.worker.behind:
        worker = _pill(f"worker {v.worker.name} cannot keep up with live audio (real-time factor "
                       f"{v.worker.rtf:.1f}): its transcript falls behind · {v.worker.backend} {v.worker.model}",
                       False, "vp-behind")
    elif v.worker.ready:
        worker = _pill(f"worker {v.worker.name} ready · {v.worker.backend} {v.worker.model} · {v.worker.language}",
                       True)
    else:
        worker = _pill(f"worker {v.worker.name} not ready yet (loading)", False)
    spoken = ""
    if v.language:
        how = "given" if v.language_prob is None else (
            f"{'uncertain' if v.language_uncertain else 'detected'} · p {v.language_prob:.2f}")
        spoken = _pill(f"language {v.language} ({how})", False if v.language_uncertain else None)
    attrs = {
        "data-language": v.language, "data-language-uncertain": int(v.language_uncertain),
        "data-state": state, "data-stream": v.stream or "", "data-listening": int(v.listening),
        "data-worker": v.worker.name if v.worker else "", "data-worker-ready": int(bool(v.worker and v.worker.ready)),
        "data-worker-behind": int(bool(v.worker and v.worker.behind)),
        "data-ended": int(v.ended), "data-seconds": f"{v.seconds:.1f}",
    }
    a = " ".join(f'{k}="{html.escape(str(val))}"' for k, val in attrs.items())
    return f'<div id="voxpipe-status" {a}>{conn}{listen}{worker}{spoken}</div>'


def render_transcript(v: View) -> str:
    if not v.committed and not v.partial:
        inner = '<span class="vp-empty">The transcript appears here.</span>' if not v.stream else ""
    else:
        inner = f'<span class="vp-committed">{html.escape(v.committed)}</span>'
        if v.partial:
            inner += f' <span class="vp-partial">{html.escape(v.partial.strip())}</span>'
    if v.error:
        inner += f'<div class="vp-pill off">worker error: {html.escape(v.error)}</div>'
    return f'<div id="voxpipe-transcript" data-ended="{int(v.ended)}">{inner}</div>'


def render_downloads(v: View) -> str:
    if not (v.stream and v.worker and v.key):
        return '<div id="voxpipe-downloads"></div>'
    links = " ".join(
        f'<a href="{DOWNLOAD_ROUTE.lstrip("/")}/{v.stream}/{fmt}?worker={v.worker.name}&amp;key={v.key}" '
        f'download class="vp-download" data-format="{fmt}">{fmt.upper()}</a>'
        for fmt in EXPORT_FORMATS
    )
    return f'<div id="voxpipe-downloads">Download the transcript: {links}</div>'


# -- the app --------------------------------------------------------------------------------------------------------
def build_app(hub: WebHub, settings: PageSettings):
    """A FastAPI app: the download routes and the Gradio page mounted at ``/``."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr
    from fastapi import FastAPI, HTTPException
    from fastapi.responses import Response
    from fastrtc import WebRTC

    app = FastAPI(title=settings.title, docs_url=None, redoc_url=None, openapi_url=None)

    @app.get(DOWNLOAD_ROUTE + "/{stream}/{fmt}")
    def download(stream: str, fmt: str, worker: str = "", key: str = ""):
        found = hub.export(stream, key, worker, fmt)
        if found is None:
            raise HTTPException(status_code=404, detail="no such transcript")
        name, ctype, body = found
        return Response(body, media_type=f"{ctype}; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})

    token_required = bool(settings.token)
    pages = Pages()

    def frame(key: str):
        """The page's outputs now: (status, transcript, downloads, worker menu, language menu)."""
        sel = pages.get(key) or Selection()
        v = hub.view(stream_id(sel.webrtc_id) if sel.webrtc_id else None, sel.worker, sel.language)
        langs = ("any",) + v.languages
        language = sel.language if sel.language in langs else "any"
        names = tuple((w.label(), w.name) for w in v.workers)
        chosen = v.worker.name if v.worker else None
        pages.update(key, create=False, worker=chosen, language=language)
        return (render_status(v, token_required), render_transcript(v), render_downloads(v),
                (names, chosen), (langs, language))

    async def live(request: gr.Request):
        """One long-lived event per page: yields its outputs whenever they change.

        The first yield also fills the token field from the address (``?token=``), if the page has one.
        """
        key = request.session_hash
        pages.open(key)
        given = request.query_params.get("token") if token_required else None
        token_update = gr.update(value=given) if given else gr.skip()
        sent, quiet = None, 0.0
        while pages.get(key) is not None:
            try:
                now = frame(key)
            except Exception:  # noqa: BLE001 - a drawing bug must not end the page's updates
                log.exception("page update failed")
                now = sent
            if now != sent or quiet >= KEEPALIVE_S:
                old = sent or (None,) * 5
                worker_menu = gr.skip() if now[3] == old[3] else gr.update(choices=list(now[3][0]), value=now[3][1])
                language_menu = gr.skip() if now[4] == old[4] else gr.update(choices=list(now[4][0]), value=now[4][1])
                yield now[0], now[1], now[2], worker_menu, language_menu, token_update
                sent, quiet, token_update = now, 0.0, gr.skip()
            await asyncio.sleep(REFRESH_S)
            quiet += REFRESH_S

    def ask(sel: Selection | None) -> None:
        """The page's language and task, for its stream (also before the stream opens)."""
        if sel is not None and sel.webrtc_id:
            hub.set_hints(stream_id(sel.webrtc_id), sel.spoken, sel.task)

    def bind(mic_value, request: gr.Request):
        """The page's microphone connected: show that stream from now on."""
        log.debug("page %s shows stream %r", request.session_hash, mic_value)
        if isinstance(mic_value, str) and mic_value != "__webrtc_value__" and m.valid_id(stream_id(mic_value)):
            pages.update(request.session_hash, webrtc_id=mic_value)
            ask(pages.get(request.session_hash))

    def select(worker_name, language_name, request: gr.Request):
        pages.update(request.session_hash, worker=worker_name, language=language_name or "any")

    def choose(spoken, task, request: gr.Request):
        spoken, task = page_choice(spoken, task)
        pages.update(request.session_hash, spoken=spoken, task=task)
        ask(pages.get(request.session_hash))

    def leave(request: gr.Request):
        """The tab was closed (or reloaded): end its stream now, not when WebRTC notices (~30 s)."""
        sel = pages.get(request.session_hash)
        pages.drop(request.session_hash)
        if sel and sel.webrtc_id and hub.close_stream(stream_id(sel.webrtc_id)):
            log.info("browser stream %s closed with its page", stream_id(sel.webrtc_id))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # theme/css move to launch() in Gradio 6
        theme = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
        blocks = gr.Blocks(title=settings.title, css=CSS, theme=theme, analytics_enabled=False,
                           head=capture_script())
    with blocks:
        gr.Markdown("## voxpipe · live transcript\nPress **Start** and speak. Confirmed words are shown in full; "
                    "the words in light italics are still being decoded and may change.")
        with gr.Row():
            with gr.Column(scale=3):
                mic = WebRTC(
                    label="Microphone", modality="audio", mode="send", elem_id="voxpipe-mic",
                    rtc_configuration=rtc_configuration(settings.ice_servers),
                    server_rtc_configuration=rtc_configuration(settings.ice_servers),
                    button_labels={"start": "Start", "stop": "Stop", "waiting": "Connecting"},
                    full_screen=False, height=160, icon=_mic_icon(), icon_radius=50,
                )
            with gr.Column(scale=2):
                token = gr.Textbox(label="Access token", type="password", visible=token_required,
                                   elem_id="voxpipe-token", placeholder="given by whoever runs this server")
                with gr.Row():
                    spoken = gr.Dropdown(label="Speaking", choices=list(SPOKEN), value="auto",
                                         allow_custom_value=True, elem_id="voxpipe-spoken",
                                         info="the language spoken (auto: detected)")
                    task = gr.Dropdown(label="Task", choices=list(TASKS), value="transcribe",
                                       elem_id="voxpipe-task", info="translate: English text")
                language = gr.Dropdown(label="Worker language", choices=["any"], value="any",
                                       allow_custom_value=True, elem_id="voxpipe-language",
                                       info="shows the workers of this language")
                worker = gr.Dropdown(label="Worker", choices=[], value=None, allow_custom_value=True,
                                     elem_id="voxpipe-worker", info="whose transcript to show")
        status = gr.HTML(render_status(hub.view(None), token_required), elem_classes=["vp-live"])
        gr.HTML('<div id="voxpipe-capture" data-state="idle"></div>', elem_classes=["vp-live"])
        transcript = gr.HTML(render_transcript(hub.view(None)), elem_classes=["vp-live"])
        downloads = gr.HTML(render_downloads(hub.view(None)), elem_classes=["vp-live"])
        mic.stream(_handler_class()(hub, settings.token), inputs=[mic, token, spoken, task], outputs=[mic],
                   concurrency_limit=settings.max_sessions, time_limit=None)
        quiet = {"show_progress": "hidden", "concurrency_limit": None, "queue": True, "api_name": False}
        mic.tick(bind, inputs=[mic], outputs=None, **quiet)
        worker.input(select, inputs=[worker, language], outputs=None, **quiet)
        language.input(select, inputs=[worker, language], outputs=None, **quiet)
        spoken.input(choose, inputs=[spoken, task], outputs=None, **quiet)
        task.input(choose, inputs=[spoken, task], outputs=None, **quiet)
        blocks.load(live, inputs=None, outputs=[status, transcript, downloads, worker, language, token], **quiet)
        blocks.unload(leave)

    return gr.mount_gradio_app(app, blocks, path="/", show_api=False, ssr_mode=False, mcp_server=False)
