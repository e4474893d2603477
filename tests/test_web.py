"""``voxpipe web`` in a real headless Chromium: fake microphone in, transcript on the page.

One module-scoped pipeline (broker, VAD, a tiny.en worker) carries two web
actors: ``web`` on loopback without a token, and ``webtok`` on 0.0.0.0 with
one. Chromium's fake microphone plays a clip from tests/data, padded with
silence before and after (so its loop starts silent); the test stops it after
one play. Most tests pad 3 s before the clip, so they do not depend on what
happens while WebRTC connects; one pads 0.3 s and checks that speech right
after the Start click reaches the page. The clips are their first sentences
(tests/clips.py: 6 to 13 s, 18 to 40 words), which is all a page needs to show.
Screenshots go to out/web/.

Needs the Debian ``chromium`` package and the ``web`` and ``test`` extras
(playwright drives the system Chromium; no browser is downloaded).
"""

from __future__ import annotations

import re
import shutil
import signal
import time
import wave
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline import messages as m
from tests import clips
from tests.procs import ROOT, VOXPIPE, Pipeline, Proc, child_env, free_port

pytest.importorskip("fastrtc")
pytest.importorskip("gradio")
sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip("no chromium (apt-get install chromium)", allow_module_level=True)

pytestmark = [pytest.mark.browser, pytest.mark.model, pytest.mark.realtime]

DATA = ROOT / "tests" / "data"
SHOTS = ROOT / "out" / "web"
TOKEN = "s3cret-for-tests"
LEAD_S, TAIL_S = 3.0, 4.0
SLOW_OFFER_S = 2.5
CHROME_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream", "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    # Gradio and FastRTC ask for a script and a sound from the internet: no name resolves, nothing leaves
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]


def wer(ref: str, hyp: str) -> float:
    from apps.bench.evaluation import wer as _wer

    return _wer(ref, hyp)


@dataclass(frozen=True)
class Clip:
    """What a browser's fake microphone plays: ``path`` (``seconds`` long, silence included) and its ``text``."""

    path: Path
    seconds: float
    text: str


def padded_clip(name: str, sentences: int, folder: Path, lead: float = LEAD_S) -> Clip:
    """The clip's first ``sentences`` with ``lead`` s of silence before and TAIL_S after."""
    path, text = clips.sentences(name, sentences, folder, lead=lead, tail=TAIL_S)
    with wave.open(str(path)) as w:
        return Clip(path, w.getnframes() / w.getframerate(), text)


@dataclass
class Stack:
    p: Pipeline
    url: str  # loopback page, no token
    token_url: str  # 0.0.0.0 page with TOKEN


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    folder = tmp_path_factory.mktemp("web")
    with Pipeline(folder, ready_timeout=120) as p:
        port, token_port = free_port(), free_port()
        cfg = str(p.write_config(
            "vad:\n  enabled: true\n  name: vad\n"
            "workers:\n  - name: asr\n    backend: faster-whisper\n    model: tiny.en\n    language: en\n"
            "    options:\n      device: cpu\n"
            f"web:\n  enabled: true\n  name: web\n  port: {port}\n"
        ))
        p.start("vad", ["vad", "--config", cfg, "--name", "vad"])
        p.start("asr", ["worker", "--config", cfg, "--name", "asr"], env={"HF_HUB_OFFLINE": "1"})
        p.start("web", ["web", "--config", cfg])
        p.start("webtok", ["web", "--config", cfg, "--name", "webtok", "--host", "0.0.0.0", "--port", str(token_port),
                           "--token", TOKEN, "--ice-address", "127.0.0.1"])
        try:
            p.wait_ready("vad", "asr", "web", "webtok")
        except (TimeoutError, RuntimeError) as exc:
            pytest.fail(f"{exc}\n{p.logs()}")
        yield Stack(p, f"http://127.0.0.1:{port}/", f"http://127.0.0.1:{token_port}/")


@pytest.fixture(scope="module")
def playwright():
    with sync_api.sync_playwright() as pw:
        yield pw


@pytest.fixture
def browser(playwright, tmp_path):
    """``browser(name, sentences) -> (Page opener, Clip)``: a Chromium whose microphone plays the first
    ``sentences`` of clip ``name``; all closed after."""
    opened = []

    def launch(name: str, sentences: int, lead: float = LEAD_S):
        clip = padded_clip(name, sentences, tmp_path, lead)
        b = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                       args=CHROME_ARGS + [f"--use-file-for-fake-audio-capture={clip.path}"])
        opened.append(b)
        return WebPage(b), clip

    yield launch
    for b in opened:
        try:
            b.close()
        except Exception:  # noqa: BLE001 - already gone
            pass


class WebPage:
    """The voxpipe page in one browser: open, start, stop, read."""

    def __init__(self, browser):
        self.page = browser.new_page(viewport={"width": 1100, "height": 820})
        self.clicked = 0.0

    def open(self, url: str) -> WebPage:
        self.page.goto(url, wait_until="domcontentloaded")
        self.page.wait_for_selector("#voxpipe-status", timeout=60_000)
        return self

    def open_when_up(self, url: str, proc, timeout: float = 90.0) -> WebPage:
        """Open ``url`` once the server that ``proc`` starts answers (fails if ``proc`` exits first)."""
        import urllib.request

        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(url, timeout=2).close()
                return self.open(url)
            except OSError:
                if not proc.alive() or time.monotonic() > deadline:
                    raise AssertionError(
                        f"{url} never answered (rc={proc.popen.poll()})\n{proc.log()[-3000:]}") from None
                time.sleep(0.5)

    def status(self) -> dict:
        return self.page.evaluate(
            "() => Object.fromEntries(Object.entries(document.querySelector('#voxpipe-status').dataset))")

    def wait(self, predicate, timeout: float, what: str) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            st = self.status()
            if predicate(st):
                return st
            if time.monotonic() > deadline:
                raise AssertionError(f"page never {what} in {timeout}s; status {st}; text {self.text()!r}")
            self.page.wait_for_timeout(250)

    def start(self) -> None:
        mic = self.page.locator("#voxpipe-mic")
        mic.locator("button").first.wait_for(timeout=60_000)
        access = mic.get_by_role("button", name="Click to Access Microphone")
        if access.count():
            access.click()
        mic.locator("button", has_text="Start").click(timeout=30_000)
        self.clicked = time.monotonic()

    def stop(self) -> None:
        self.page.locator("#voxpipe-mic button", has_text="Stop").click(timeout=30_000)

    def slow_signalling(self, seconds: float) -> None:
        """Hold the page's WebRTC offer back for ``seconds``, as a slow network or a busy server would.

        (On this machine the connection is otherwise up within a few tenths of a second.)
        """
        import json

        def handle(route):
            try:
                body = json.loads(route.request.post_data or "{}")
            except ValueError:
                body = {}
            data = body.get("data") if isinstance(body, dict) else None
            if body.get("fn_name") == "offer" and isinstance(data, dict) and data.get("type") == "offer":
                time.sleep(seconds)
            route.continue_()

        self.page.route("**/component_server**", handle)

    def capture(self) -> dict:
        """The page script's capture state (#voxpipe-capture) and the states it went through."""
        return self.page.evaluate(
            "() => ({...document.querySelector('#voxpipe-capture').dataset,"
            " log: (window.__voxpipeCapture || {}).log || []})")

    def text(self) -> str:
        committed = self.page.locator("#voxpipe-transcript .vp-committed")
        return committed.inner_text() if committed.count() else ""

    def play_once(self, seconds: float) -> dict:
        """Wait until the clip (not the silence after it) has reached the server, then the caller stops.

        The fake capture starts at the click; WebRTC connects a moment later, so stream time 0 is a
        little way into the file's LEAD_S of silence. Waiting for ``seconds - TAIL_S + 1.5`` of stream
        time is past the clip's end, and before its second play, which starts with LEAD_S of silence.
        """
        self.wait(lambda s: s["state"] == "open", 60, "connected")
        return self.wait(lambda s: float(s["seconds"]) >= seconds - TAIL_S + 1.5, seconds + 30, "got the whole clip")

    def screenshot(self, name: str) -> Path:
        SHOTS.mkdir(parents=True, exist_ok=True)
        path = SHOTS / name
        self.page.screenshot(path=str(path), full_page=True)
        return path


class BusTap:
    """A SUB socket on the test bus, synced through the broker before it is used."""

    def __init__(self, bus, prefix: str, name: str):
        import zmq

        from pipeline.bus import Publisher, Subscriber, handshake

        ctx = zmq.Context.instance()
        self.sub = Subscriber(ctx, bus, [prefix])
        pub = Publisher(ctx, bus)
        try:
            assert handshake(pub, self.sub, name, timeout=10.0), "bus tap did not sync"
        finally:
            pub.close()

    def until(self, stop, timeout: float) -> list[tuple[str, m.Message]]:
        """Messages received until ``stop(topic, msg)`` holds for one (included) or ``timeout`` passes."""
        got, deadline = [], time.monotonic() + timeout
        while time.monotonic() < deadline:
            item = self.sub.recv(timeout_ms=200)
            if item is None or (isinstance(item[1], m.Heartbeat) and item[1].role == "probe"):
                continue
            got.append(item)
            if stop(*item):
                break
        return got

    def close(self) -> None:
        self.sub.close()


@pytest.fixture
def tap(stack):
    taps = []

    def make(prefix: str) -> BusTap:
        taps.append(BusTap(stack.p.bus.config(), prefix, f"tap{len(taps)}"))
        return taps[-1]

    yield make
    for t in taps:
        t.close()


def is_eos(stream: str):
    return lambda topic, msg: isinstance(msg, m.EndOfStream) and msg.stream == stream


# -- the tests -----------------------------------------------------------------------------------------------
def test_browser_microphone_to_live_transcript(stack, browser, tap):
    audio = tap("audio.web-")
    web, clip = browser("weather", 3)
    page = web.open(stack.url)
    st = page.wait(lambda s: s["workerReady"] == "1", 30, "showed the worker ready")
    assert st["state"] == "idle" and st["worker"] == "asr", st
    page.start()
    page.wait(lambda s: s["state"] == "open", 60, "connected")
    # live, while it speaks: the unconfirmed words appear after the committed ones, in a lighter style
    page.page.wait_for_function(
        "() => { const c = document.querySelector('#voxpipe-transcript .vp-committed');"
        " const p = document.querySelector('#voxpipe-transcript .vp-partial');"
        " return c && p && c.innerText.trim().split(/\\s+/).length >= 3 && p.innerText.trim(); }", timeout=45_000)
    partial = page.page.locator("#voxpipe-transcript .vp-partial")
    opacity = float(partial.evaluate("e => getComputedStyle(e).opacity"))
    live = page.screenshot("web-live.png")
    assert opacity < 0.8, opacity
    st = page.play_once(clip.seconds)
    stream = st["stream"]
    assert re.fullmatch(r"web-[a-z0-9]+", stream), st
    assert st["state"] == "open" and len(page.text().split()) > 20, "no committed text while streaming"
    page.stop()
    st = page.wait(lambda s: s["ended"] == "1", 120, "showed the worker's end of stream")
    text = page.text()
    shot = page.screenshot("web-transcript.png")
    score = wer(clip.text, text)
    print(f"\nbrowser transcript WER {score:.3f} ({shot}, {live}): {text}")
    assert score <= 0.25, f"WER {score:.3f}: {text!r}"

    # what went on the bus: 100 ms frames of 16 kHz int16, contiguous t, one wall0, then eos
    msgs = [(t, x) for t, x in audio.until(is_eos(stream), 10) if x.stream == stream]
    frames = [x for _, x in msgs if isinstance(x, m.Audio)]
    assert isinstance(msgs[-1][1], m.EndOfStream), msgs[-3:]
    assert frames and all(f.sr == 16000 for f in frames)
    assert [round(f.t, 3) for f in frames] == [round(i * 0.1, 3) for i in range(len(frames))]
    assert len({f.wall0 for f in frames}) == 1
    total = sum(f.duration for f in frames)
    assert msgs[-1][1].t == pytest.approx(total) and clip.seconds - 6 < total < clip.seconds + 4

    # the download links serve the same transcript
    links = {a.get_attribute("data-format"): a.get_attribute("href")
             for a in page.page.locator("#voxpipe-downloads a").all()}
    assert set(links) == {"txt", "srt", "json"}
    txt = page.page.request.get(stack.url + links["txt"]).text()
    assert txt.strip() == text.strip()
    srt = page.page.request.get(stack.url + links["srt"]).text()
    assert re.match(r"1\n00:00:\d\d,\d{3} --> 00:00:\d\d,\d{3}\n", srt), srt[:200]
    doc = page.page.request.get(stack.url + links["json"]).json()
    assert doc["stream"] == stream and doc["worker"] == "asr" and doc["ended"] and doc["text"].strip() == text.strip()
    assert page.page.request.get(stack.url + links["txt"].replace("key=", "key=x")).status == 404


def first_sentence(text: str) -> str:
    return re.split(r"(?<=[.!?])\s", text.strip(), maxsplit=1)[0]


def test_speech_right_after_start_reaches_the_page(stack, browser):
    """Users speak as soon as they click: nothing said while WebRTC connects is lost.

    The clip starts 0.3 s into the fake microphone's file, and the WebRTC offer is held back
    2.5 s (a slow network). The page holds the microphone's audio from the click, shows
    "connecting" until the connection is up, then sends what it held and catches up; the
    clip's first sentence is on the page.
    """
    web, clip = browser("history", 1, lead=0.3)
    page = web.open(stack.url)
    page.slow_signalling(SLOW_OFFER_S)
    page.wait(lambda s: s["workerReady"] == "1", 30, "showed the worker ready")
    assert page.capture()["state"] == "idle"
    page.start()
    page.page.wait_for_function("document.querySelector('#voxpipe-capture').dataset.state !== 'idle'",
                                timeout=5_000)
    assert "connecting" in page.page.inner_text("#voxpipe-capture")
    page.page.wait_for_function("document.querySelector('#voxpipe-capture').dataset.state === 'live'",
                                timeout=60_000)
    capture = page.capture()
    states = [s for s, _ in capture["log"]]
    assert states[0] == "connecting" and "live" in states, capture
    held = float(capture["held"])
    assert held >= SLOW_OFFER_S - 0.5, capture  # what was said while connecting was kept
    st = page.play_once(clip.seconds)
    page.stop()
    page.wait(lambda s: s["ended"] == "1", 120, "showed the worker's end of stream")
    text = page.text()
    page.screenshot("web-first-sentence.png")
    first = first_sentence(clip.text)
    opening = " ".join(text.split()[: len(first.split())])
    score = wer(first, opening)
    print(f"\nheld while connecting: {held:.2f} s; states {capture['log']}; stream {st['seconds']} s\n"
          f"first sentence WER {score:.3f}: {opening!r}\n  page: {text}")
    assert score <= 0.25, f"the first sentence is not on the page: {opening!r} (whole page: {text!r})"
    assert wer(clip.text, text) <= 0.3, text


def test_two_browsers_each_see_only_their_own_stream(stack, browser):
    (a_web, a_clip), (b_web, b_clip) = browser("kitchen", 2), browser("history", 2)
    a, b = a_web.open(stack.url), b_web.open(stack.url)
    a.start()
    b.start()
    a_st, b_st = a.play_once(a_clip.seconds), b.play_once(b_clip.seconds)
    assert a_st["stream"] != b_st["stream"]
    a.stop()
    b.stop()
    texts = {}
    for clip, page in (("kitchen", a), ("history", b)):
        page.wait(lambda s: s["ended"] == "1", 120, "showed the worker's end of stream")
        texts[clip] = page.text()
    a.screenshot("web-two-sessions-kitchen.png")
    b.screenshot("web-two-sessions-history.png")
    refs = {"kitchen": a_clip.text, "history": b_clip.text}
    scores = {(clip, ref): round(wer(refs[ref], texts[clip]), 3)
              for clip in texts for ref in ("kitchen", "history")}
    print(f"\ntwo sessions, WER (page, reference): {scores}\n  kitchen page: {texts['kitchen']}\n"
          f"  history page: {texts['history']}")
    # two real-time streams on a small shared CPU cost tiny.en some accuracy; what matters here is
    # that each page holds its own clip and none of the other's
    assert scores["kitchen", "kitchen"] <= 0.5 and scores["history", "history"] <= 0.5, scores
    assert scores["kitchen", "history"] >= 0.8 and scores["history", "kitchen"] >= 0.8, scores


def test_beyond_loopback_the_page_streams_only_with_the_token(stack, browser, tap):
    audio = tap("audio.web-")
    web, _ = browser("meeting", 6)
    page = web.open(stack.token_url)
    page.wait(lambda s: s["workerReady"] == "1", 30, "showed the worker ready")
    assert page.page.locator("#voxpipe-token input").is_visible()
    assert "enter the access token" in page.page.inner_text("#voxpipe-status")
    page.start()  # no token given
    page.wait(lambda s: s["state"] == "denied", 60, "refused to stream")
    assert "access token missing or wrong" in page.page.inner_text("#voxpipe-status")
    got = audio.until(lambda t, x: True, 4)
    assert not got, f"audio reached the bus without the token: {got[:2]}"

    # the same page with the token typed in streams; closing its tab ends the stream at once
    page.page.fill("#voxpipe-token input", TOKEN)
    page.start()
    st = page.wait(lambda s: s["state"] == "open", 60, "connected")
    got = audio.until(lambda t, x: isinstance(x, m.Audio) and x.stream == st["stream"], 30)
    assert got and got[-1][1].stream == st["stream"], "no audio on the bus with the token"
    page.page.close()
    ended = audio.until(is_eos(st["stream"]), 15)
    assert ended and is_eos(st["stream"])(*ended[-1]), "closing the tab did not end its stream"

    # a link with the token fills it in; on the actor's first SIGTERM every open browser stream gets eos
    last = WebPage(page.page.context.browser).open(stack.token_url + f"?token={TOKEN}")
    last.page.wait_for_function("document.querySelector('#voxpipe-token input').value.length > 0", timeout=30_000)
    last.start()
    st = last.wait(lambda s: s["state"] == "open", 60, "connected")
    assert audio.until(lambda t, x: isinstance(x, m.Audio) and x.stream == st["stream"], 30)
    proc = stack.p.procs["webtok"]
    proc.signal(signal.SIGTERM)
    ended = audio.until(is_eos(st["stream"]), 15)
    assert ended and is_eos(st["stream"])(*ended[-1]), "no eos on SIGTERM"
    assert proc.wait(30) == 0


def test_one_command_runs_the_whole_pipeline_behind_the_page(browser, tmp_path):
    """The fork's ``fastrtc_server.py --model … --lan … --min-chunk-size … --host … --port … --backend …``,
    as ``voxpipe web`` with the same flags and no config: broker, VAD, worker and page from one command.
    The page transcribes a clip; Ctrl-C stops every process it started."""
    psutil = pytest.importorskip("psutil")
    port = free_port()
    out = open(tmp_path / "web-all.out", "wb")  # noqa: SIM115 - closed below
    proc = Proc("web-all", VOXPIPE + ["web", "--model", "tiny.en", "--lan", "en", "--min-chunk-size", "1.0",
                                      "--host", "127.0.0.1", "--port", str(port), "--backend", "faster-whisper",
                                      "-o", "device=cpu"],
                tmp_path / "web-all.log", env=child_env({"HF_HUB_OFFLINE": "1"}), stdout=out)
    try:
        web, clip = browser("weather", 3)
        page = web.open_when_up(f"http://127.0.0.1:{port}/", proc)
        st = page.wait(lambda s: s["workerReady"] == "1", 90, "showed the worker ready")
        assert st["worker"] == "asr" and "faster-whisper tiny.en" in page.page.inner_text("#voxpipe-status")
        children = {c.pid: c.name() for c in psutil.Process(proc.pid).children(recursive=True)}
        assert len(children) >= 4, children  # broker, vad, worker, page
        page.start()
        page.play_once(clip.seconds)
        page.stop()
        page.wait(lambda s: s["ended"] == "1", 120, "showed the worker's end of stream")
        text = page.text()
        score = wer(clip.text, text)
        print(f"\none-command pipeline: WER {score:.3f}: {text}")
        assert score <= 0.25, text
        proc.signal(signal.SIGINT)
        assert proc.wait(60) == 130
        left = [pid for pid in children if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
        assert not left, f"still running after Ctrl-C: {left}"
    finally:
        proc.kill()
        out.close()
        if proc.popen.returncode not in (130, None):
            print((tmp_path / "web-all.out").read_text(errors="replace")[-4000:], proc.log()[-2000:])


def test_the_page_asks_the_workers_for_the_language_spoken_and_the_task(stack, browser, tap):
    """"Speaking" and "Task" travel with every audio frame; an English-only worker keeps its own (and says so)."""
    audio = tap("audio.web-")
    web, _ = browser("meeting", 6)
    page = web.open(stack.url)
    page.wait(lambda s: s["workerReady"] == "1", 30, "showed the worker ready")
    for menu, option in (("#voxpipe-spoken", "de"), ("#voxpipe-task", "translate into English")):
        page.page.locator(f"{menu} input").click()
        page.page.get_by_role("option", name=option, exact=True).click()
    page.start()
    st = page.wait(lambda s: s["state"] == "open", 60, "connected")
    got = audio.until(lambda t, x: isinstance(x, m.Audio) and x.stream == st["stream"] and x.t >= 3.0, 30)
    frames = [x for _, x in got if isinstance(x, m.Audio) and x.stream == st["stream"]]
    assert frames and {(f.language, f.task) for f in frames} == {("de", "translate")}, frames[:1]
    # the tiny.en worker cannot: it transcribes English, and its commits say so
    st = page.wait(lambda s: s["language"] != "", 45, "showed the language of a commit")
    assert st["language"] == "en" and st["languageUncertain"] == "0", st
    hb = stack.p.wait_heartbeat("asr", lambda h: h.counters.get("hints_ignored", 0) >= 1, timeout=15)
    assert hb.counters["hints_ignored"] >= 1
    page.stop()
