"""The web actor's shared state (workers/web_streams.py) and page drawing, without a browser."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from pipeline import messages as m
from workers.web_streams import FRAME_SAMPLES, SR, LinearResampler, SessionRefused, WebHub, to_mono_float


def heartbeat(name, ready=True, language=None, role="worker"):
    info = {"backend": "faster-whisper", "model": "tiny.en"}
    if language:
        info["language"] = language
    return m.Heartbeat(stream="", seq=0, name=name, role=role, ready=ready, info=info)


def commit(worker, stream, text, beg, end, seq=0):
    words = text.split()
    step = (end - beg) / len(words)
    return m.Commit(stream=stream, seq=seq, beg=beg, end=end, text=text, worker=worker,
                    words=[[beg + i * step, beg + (i + 1) * step, w] for i, w in enumerate(words)])


def tone(seconds, rate=SR, freq=440.0):
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t) * 32767).astype(np.int16)


def test_audio_is_cut_into_contiguous_100ms_frames_with_fixed_wall0_then_eos():
    hub = WebHub()
    hub.open_stream("web-a")
    before = time.time()
    for chunk in np.array_split(tone(1.03), 17):  # odd chunk sizes, as WebRTC delivers them
        hub.push_audio("web-a", SR, chunk.reshape(1, -1))
    out = hub.take_outgoing()
    assert [o.kind for o in out] == ["audio"] * 10
    assert [o.t for o in out] == pytest.approx([i / 10 for i in range(10)])
    assert all(len(o.pcm) == FRAME_SAMPLES * 2 for o in out)
    assert len({o.wall0 for o in out}) == 1 and before - 0.2 < out[0].wall0 <= time.time()
    assert hub.close_stream("web-a") and not hub.close_stream("web-a")
    tail = hub.take_outgoing()
    assert [o.kind for o in tail] == ["audio", "eos"]  # the last 30 ms, then eos at the true end
    assert len(tail[0].pcm) == int(0.03 * SR) * 2
    assert tail[1].t == pytest.approx(1.03)
    hub.push_audio("web-a", SR, tone(0.5))  # after close: ignored
    assert hub.take_outgoing() == []


def test_other_rates_and_layouts_become_16k_mono():
    hub = WebHub()
    hub.open_stream("web-b")
    stereo = np.stack([tone(1.0, 48000), tone(1.0, 48000)])  # (channels, samples) at 48 kHz
    for chunk in np.array_split(stereo, 7, axis=1):
        hub.push_audio("web-b", 48000, chunk)
    hub.close_stream("web-b")
    pcm = b"".join(o.pcm for o in hub.take_outgoing() if o.kind == "audio")
    x = np.frombuffer(pcm, dtype="<i2")
    assert abs(len(x) - SR) <= 2
    spectrum = np.abs(np.fft.rfft(x.astype(np.float32)))
    assert abs(np.argmax(spectrum) * SR / len(x) - 440.0) < 3  # still a 440 Hz tone


def test_resampler_is_continuous_across_chunks():
    x = np.sin(np.arange(48000) / 48000 * 2 * np.pi * 5).astype(np.float32)
    whole = LinearResampler(48000)(x)
    r = LinearResampler(48000)
    parts = np.concatenate([r(c) for c in np.array_split(x, 13)])
    assert len(parts) == len(whole) and np.allclose(parts, whole, atol=1e-6)
    assert to_mono_float(np.zeros((480, 2), dtype=np.int16)).shape == (480,)


def test_transcripts_go_to_their_stream_and_worker_only():
    hub = WebHub()
    hub.open_stream("web-a")
    hub.open_stream("web-b")
    for name in ("tiny", "base"):
        hub.on_message(m.status_topic(name), heartbeat(name, language="en"))
    hub.on_message("transcript.tiny.web-a", commit("tiny", "web-a", "hello there", 0.0, 1.0))
    hub.on_message("transcript.base.web-a", commit("base", "web-a", "hello their", 0.0, 1.0))
    hub.on_message("transcript.tiny.web-b", commit("tiny", "web-b", "good morning", 0.0, 1.0))
    hub.on_message("transcript.tiny.file", commit("tiny", "file", "not a browser stream", 0.0, 1.0))
    hub.on_message("partial.tiny.web-a", m.Partial(stream="web-a", seq=0, text="general kenobi", worker="tiny"))
    a = hub.view("web-a", "tiny")
    assert (a.committed, a.partial, a.worker.name) == ("hello there", "general kenobi", "tiny")
    assert hub.view("web-a", "base").committed == "hello their"
    assert hub.view("web-b", "tiny").committed == "good morning"
    b = hub.view("web-b")  # default worker: the first (by name, when there is no config order)
    assert b.worker.name == "base" and b.committed == ""
    hub.on_message("transcript.tiny.web-a", commit("tiny", "web-a", "general kenobi", 1.0, 2.0, seq=1))
    assert hub.view("web-a", "tiny").partial == ""  # the commit replaces the partial
    hub.on_message("transcript.tiny.web-a", m.EndOfStream(stream="web-a", seq=2, t=2.0, worker="tiny"))
    a = hub.view("web-a", "tiny")
    assert a.ended and a.committed == "hello there general kenobi"
    hub.on_message("transcript.tiny.web-a", m.Error(stream="web-a", seq=3, message="boom", worker="tiny"))
    assert hub.view("web-a", "tiny").error == "boom"


def test_a_pool_is_one_worker_on_the_page_whichever_replica_holds_the_stream():
    hub = WebHub(worker_order=("asr",))
    hub.open_stream("web-a")
    for name, ready in (("asr-1", False), ("asr-2", True)):
        hb = heartbeat(name, ready=ready, language="en")
        hb.info["pool"] = "asr"
        hub.on_message(m.status_topic(name), hb)
    (pool,) = hub.view(None).workers
    assert pool.name == "asr" and pool.ready  # ready: one of its workers is
    first = m.Commit(stream="web-a", seq=0, beg=0.0, end=1.0, text="good", worker="asr-1", epoch=1)
    later = m.Commit(stream="web-a", seq=2, beg=1.0, end=2.0, text="morning", worker="asr-2", epoch=2)
    stale = m.Commit(stream="web-a", seq=1, beg=1.0, end=2.0, text="morning", worker="asr-1", epoch=1)
    for msg in (first, later, stale):  # asr-1 was presumed dead, and spoke late
        hub.on_message("transcript.asr.web-a", msg)
    assert hub.view("web-a", "asr").committed == "good morning"
    hub.open_stream("web-b")
    hub.on_message("transcript.asr.web-b", m.Error(stream="web-b", seq=0, message="refused: all 2 worker(s) of pool "
                                                   "asr are full", code=m.POOL_FULL))
    assert hub.view("web-b", "asr").error.startswith("refused")


def test_default_worker_is_the_first_configured_and_language_picks_among_workers():
    hub = WebHub(worker_order=("tiny", "fr", "base"), worker_languages={"fr": "fr"})
    hub.on_message("status.base", heartbeat("base", language="en"))
    hub.on_message("status.fr", heartbeat("fr", ready=False))  # language from the config
    hub.on_message("status.tiny", heartbeat("tiny", language="en"))
    hub.on_message("status.vad", heartbeat("vad", role="vad"))
    v = hub.view(None)
    assert [w.name for w in v.workers] == ["tiny", "fr", "base"] and v.worker.name == "tiny"
    assert v.languages == ("en", "fr")
    fr = hub.view(None, "tiny", "fr")
    assert [w.name for w in fr.workers] == ["fr"] and fr.worker.name == "fr" and not fr.worker.ready
    assert hub.view(None, "base", "en").worker.name == "base"


def test_exports_need_the_stream_key_and_match_the_transcript():
    hub = WebHub()
    s = hub.open_stream("web-a")
    hub.on_message("transcript.tiny.web-a", commit("tiny", "web-a", "Good morning.", 0.5, 1.5))
    hub.on_message("transcript.tiny.web-a", commit("tiny", "web-a", "Rain later.", 2.0, 3.0, seq=1))
    assert hub.export("web-a", "wrong", "tiny", "txt") is None
    assert hub.export("web-a", s.key, "tiny", "exe") is None
    name, ctype, txt = hub.export("web-a", s.key, "tiny", "txt")
    assert (name, ctype, txt) == ("web-a-tiny.txt", "text/plain", "Good morning. Rain later.\n")
    _, _, srt = hub.export("web-a", s.key, "tiny", "srt")
    assert srt.startswith("1\n00:00:00,500 --> 00:00:01,500\nGood morning.\n") and "2\n00:00:02,000 --> " in srt
    doc = json.loads(hub.export("web-a", s.key, "tiny", "json")[2])
    assert doc["text"] == "Good morning. Rain later." and [c["beg"] for c in doc["commits"]] == [0.5, 2.0]


def test_close_all_ends_every_open_stream_and_refuses_new_ones():
    hub = WebHub()
    for s in ("web-a", "web-b", "web-c"):
        hub.open_stream(s)
        hub.push_audio(s, SR, tone(0.05))
    hub.close_stream("web-c")
    hub.take_outgoing()
    assert hub.close_all() == 2
    out = hub.take_outgoing()
    assert sorted(o.stream for o in out if o.kind == "eos") == ["web-a", "web-b"]
    with pytest.raises(SessionRefused):
        hub.open_stream("web-d")
    with pytest.raises(SessionRefused):
        WebHub().open_stream("bad.id")


def test_a_refused_stream_shows_why_and_publishes_nothing():
    hub = WebHub()
    hub.deny("web-x", "access token missing or wrong: not streaming")
    hub.push_audio("web-x", SR, tone(0.5))
    assert hub.take_outgoing() == []
    v = hub.view("web-x")
    assert v.stream is None and v.denied.startswith("access token")


def test_page_drawing_escapes_text_and_marks_the_partial():
    pytest.importorskip("gradio")
    from workers.web_page import render_downloads, render_status, render_transcript

    hub = WebHub()
    s = hub.open_stream("web-a")
    hub.on_message("status.asr", heartbeat("asr", language="en"))
    hub.on_message("transcript.asr.web-a", commit("asr", "web-a", "<b>bold</b> & co", 0.0, 1.0))
    hub.on_message("partial.asr.web-a", m.Partial(stream="web-a", seq=0, text=" maybe", worker="asr"))
    hub.push_audio("web-a", SR, tone(0.2))
    v = hub.view("web-a")
    page = render_transcript(v)
    assert '<span class="vp-committed">&lt;b&gt;bold&lt;/b&gt; &amp; co</span>' in page
    assert '<span class="vp-partial">maybe</span>' in page
    status = render_status(v, token_required=False)
    assert 'data-state="open"' in status and 'data-listening="1"' in status and 'data-worker-ready="1"' in status
    links = render_downloads(v)
    assert f"voxpipe/download/web-a/srt?worker=asr&amp;key={s.key}" in links
    hub.deny("web-z", "access token missing or wrong: not streaming")
    assert 'data-state="denied"' in render_status(hub.view("web-z"), token_required=True)


def test_the_pages_language_and_task_go_with_every_frame_and_its_detected_language_is_shown():
    hub = WebHub()
    hub.set_hints("web-h", "de", "translate")  # chosen before the stream opened
    hub.open_stream("web-h")
    hub.push_audio("web-h", SR, tone(0.2))
    hub.set_hints("web-h", "auto", "bogus")  # changed while streaming; an unknown task is the workers' own
    hub.push_audio("web-h", SR, tone(0.1))
    out = hub.take_outgoing()
    assert [(o.language, o.task) for o in out] == [("de", "translate")] * 2 + [("auto", None)]
    hub.on_message("status.asr", heartbeat("asr", language="auto"))
    hub.on_message("transcript.asr.web-h", m.Commit(stream="web-h", seq=0, beg=0.0, end=0.3, text="Hallo",
                                                    worker="asr", language="de", language_prob=0.42,
                                                    language_uncertain=True))
    v = hub.view("web-h", "asr")
    assert (v.language, v.language_prob, v.language_uncertain) == ("de", 0.42, True)


def test_the_pages_choice_is_a_language_or_auto_and_a_task_or_transcribe():
    """What the page's "Speaking" and "Task" menus (or a page that lies) send, as the workers get it."""
    pytest.importorskip("gradio")
    from workers.web_page import page_choice

    assert page_choice(" de ", "translate") == ("de", "translate")
    assert page_choice("auto", "transcribe") == ("auto", "transcribe")
    assert page_choice("klingon!!", "dance") == ("auto", "transcribe")
    assert page_choice(None, None) == ("auto", "transcribe")
