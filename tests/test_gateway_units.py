"""The gateway's logic without processes: results from bus messages, pacing, keys, audio decoding, options.

The endpoints themselves are tested with the official clients against a real
``voxpipe serve`` in tests/test_gateway_clients.py and tests/test_gateway_limits.py.
"""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest

from pipeline import messages as m
from pipeline.config import ConfigError, load_config
from workers.gateway.access import RateLimit, key_ok, presented_key
from workers.gateway.audio_in import AudioError, ContainerAudio, RawAudio, decode_file
from workers.gateway.results import (
    ENDPOINT_WAIT_S,
    HOLD_S,
    Final,
    Interim,
    Progress,
    Results,
    SegmentDone,
    SpeechStarted,
    SpeechStopped,
    TurnEnd,
)

S = "gw-dg-0000000001"


def commit(text, beg, end, stream=S, worker="asr"):
    words = text.split()
    step = (end - beg) / len(words)
    return (f"transcript.{worker}.{stream}", m.Commit(
        stream=stream, seq=0, beg=beg, end=end, text=" " + text, worker=worker, model="tiny.en",
        words=[[beg + i * step, beg + (i + 1) * step, " " + w] for i, w in enumerate(words)]))


def partial(text, beg=None, end=None, stream=S):
    return f"partial.asr.{stream}", m.Partial(stream=stream, seq=0, beg=beg, end=end, text=text, worker="asr")


def speech_end(t, stream=S):
    return f"speech.{stream}", m.SpeechEnd(stream=stream, seq=0, t=t)


def speech_start(t, stream=S):
    return f"speech.{stream}", m.SpeechStart(stream=stream, seq=0, t=t)


def eos(stream=S):
    return f"transcript.asr.{stream}", m.EndOfStream(stream=stream, seq=0, worker="asr")


def feed(results, *items, now=0.0):
    out = []
    for topic, msg in items:
        out += results.feed(topic, msg, now)
    return out


def finals(out):
    return [r for r in out if isinstance(r, Final)]


# -- results ------------------------------------------------------------------------------------------
def test_commits_become_finals_in_connection_time_and_partials_interims():
    r = Results("asr")
    r.add_segment(S, 0.0)
    r.add_segment(S + "-1", 10.0)  # a second segment starts at connection second 10
    out = feed(r, commit("hello there", 0.5, 1.5), partial("how are", 1.5, 2.0),
               commit("again", 0.2, 0.6, stream=S + "-1"))
    assert [type(x) for x in out] == [Final, Interim, Final]
    assert out[0].text == " hello there" and not out[0].speech_final
    assert [round(w.beg, 2) for w in out[0].words] == [0.5, 1.0] and out[0].words[0].text == "hello"
    assert out[1].text == "how are" and len(out[1].words) == 2
    assert out[2].start == pytest.approx(10.2) and out[2].words[0].end == pytest.approx(10.6)


def test_another_workers_transcript_of_the_same_stream_is_not_shown():
    r = Results("asr")
    r.add_segment(S, 0.0)
    assert feed(r, commit("other", 0, 1, worker="base")) == []
    assert feed(r, ("transcript.asr.gw-dg-unknown", commit("x", 0, 1, stream="gw-dg-unknown")[1])) == []


def test_the_commit_that_empties_the_partial_after_a_pause_is_speech_final():
    r = Results("asr")
    r.add_segment(S, 0.0)
    assert finals(feed(r, commit("one two", 0, 1)))[0].speech_final is False
    assert feed(r, partial("three", 1, 1.4)) != []
    out = feed(r, speech_end(1.8))
    assert out == [SpeechStopped(1.8)]
    assert feed(r, commit("three", 1.0, 1.4), now=0.5) == []  # held: is it the last one before the pause?
    out = feed(r, partial(""), now=0.5)
    assert [type(x) for x in out] == [Final, TurnEnd]
    assert out[0].speech_final and out[0].text == " three"
    assert out[1].t == 1.8 and out[1].last_word_end == pytest.approx(1.4)


def test_the_flush_commit_of_an_unconfirmed_tail_is_speech_final_though_no_partial_follows_it():
    r = Results("asr")  # as the worker does it: a commit clears its partial, so no empty one is published
    r.add_segment(S, 0.0)
    feed(r, commit("Good morning", 0, 1.7), partial("the weather.", 1.7, 2.0), speech_end(2.69))
    assert feed(r, commit("the weather report.", 1.74, 2.54), now=3.0) == []
    out = r.tick(3.0 + HOLD_S + 1e-3)
    assert [type(x) for x in out] == [Final, TurnEnd] and out[0].speech_final and out[1].t == 2.69


def test_a_held_commit_followed_by_more_unconfirmed_text_is_not_speech_final():
    r = Results("asr")
    r.add_segment(S, 0.0)
    feed(r, partial("a b c", 0, 2), speech_end(2.2))
    assert feed(r, commit("a", 0, 0.5), now=1.0) == []
    out = feed(r, partial("b c", 0.5, 2), now=1.0)
    assert [type(x) for x in out] == [Final, Interim] and not out[0].speech_final
    out = feed(r, commit("b c", 0.5, 2), partial(""), now=1.2)  # the flush
    assert [type(x) for x in out] == [Final, TurnEnd] and out[0].speech_final


def test_a_held_commit_without_a_following_partial_is_released_as_speech_final_after_the_hold():
    r = Results("asr")
    r.add_segment(S, 0.0)
    feed(r, speech_end(1.0))  # the partial was already empty
    assert feed(r, commit("late words", 0.2, 0.9), now=5.0) == []
    assert r.tick(5.0 + HOLD_S / 2) == []
    out = r.tick(5.0 + HOLD_S + 1e-3)
    assert [type(x) for x in out] == [Final, TurnEnd] and out[0].speech_final


def test_a_pause_after_which_nothing_comes_ends_its_turn_with_an_empty_final():
    r = Results("asr")
    r.add_segment(S, 0.0)
    feed(r, commit("done", 0, 1), speech_end(1.3, ), now=2.0)
    assert r.tick(2.0 + ENDPOINT_WAIT_S / 2) == []
    out = r.tick(2.0 + ENDPOINT_WAIT_S)
    assert [type(x) for x in out] == [Final, TurnEnd]
    assert out[0].text == "" and out[0].speech_final and out[1].last_word_end == 1.0


def test_speech_resuming_before_the_flush_result_keeps_the_turn_open():
    r = Results("asr")
    r.add_segment(S, 0.0)
    feed(r, partial("tail", 0, 1), speech_end(1.2), now=0.0)
    assert feed(r, speech_start(1.6), now=0.1) == [SpeechStarted(1.6)]
    out = feed(r, commit("tail", 0, 1), partial(""), now=0.3)
    assert [type(x) for x in out] == [Final, TurnEnd] and out[0].speech_final


def test_a_flushed_segment_marks_its_last_commit_from_finalize_then_says_it_is_done():
    r = Results("asr")
    r.add_segment(S, 0.0)
    feed(r, commit("first", 0, 1))
    r.finalizing(S)
    assert r.waiting() == [S]
    assert feed(r, commit("last words", 1, 2), now=1.0) == []
    out = feed(r, eos(), now=1.01)
    assert [type(x) for x in out] == [Final, SegmentDone]
    assert out[0].from_finalize and out[0].speech_final and out[1] == SegmentDone(S, True)
    assert r.waiting() == []


def test_a_flush_with_nothing_left_gives_an_empty_from_finalize_result():
    r = Results("asr")
    r.add_segment(S, 0.0)
    r.finalizing(S)
    out = feed(r, eos())
    assert [type(x) for x in out] == [Final, SegmentDone] and out[0].from_finalize and out[0].text == ""


def test_a_discarded_segment_shows_nothing_but_its_end():
    r = Results("asr")
    r.add_segment(S, 0.0)
    r.finalizing(S, discard=True)
    assert feed(r, speech_start(0.1), commit("gone", 0, 1), partial("x", 1, 2)) == []
    assert feed(r, eos()) == [SegmentDone(S, True)]


# -- pacing -----------------------------------------------------------------------------------------------
def test_progress_holds_a_fast_sender_back_by_the_workers_speech_backlog():
    p = Progress()
    for i in range(300):  # 30 s of speech forwarded by the VAD, in 100 ms frames
        p.vad((i + 1) / 10, now=1.0, speech=0.1)
    assert p.undecoded() == pytest.approx(30.0)
    assert not p.may_send(31.0, now=1.1)
    p.worker(15.0, now=1.2)
    assert p.undecoded() == pytest.approx(15.0) and p.may_send(31.0, now=1.15)
    assert not p.may_send(95.0, now=1.15)  # too far ahead of the VAD ...
    assert p.may_send(95.0, now=1.0 + 0.3)  # ... unless the VAD has gone quiet
    long = Progress()  # an hour of speech keeps only what the worker has not passed
    for i in range(36000):
        long.vad((i + 1) / 10, now=1.0, speech=0.1)
    long.worker(3590.0, now=1.0)
    assert long.undecoded() == pytest.approx(10.0) and len(long.speech_ends) < 200
    q = Progress()
    for i in range(250):
        q.vad((i + 1) / 10, now=1.0, speech=0.1)
    assert not q.may_send(26.0, now=2.0)
    assert q.may_send(26.0, now=6.5)  # speech the worker never said anything about does not block forever


# -- keys and limits --------------------------------------------------------------------------------------
def test_keys_come_from_either_apis_header_or_a_browsers_subprotocol():
    assert presented_key({"authorization": "Token abc"}) == ("abc", None)
    assert presented_key({"authorization": "bearer abc"}) == ("abc", None)
    assert presented_key({}, ["token", "abc"]) == ("abc", "token")
    assert presented_key({}, ["realtime", "openai-insecure-api-key.abc"]) == ("abc", "realtime")
    assert presented_key({"authorization": "Basic abc"}) == (None, None)
    assert key_ok((), None) and key_ok(("k1", "k2"), "k2")
    assert not key_ok(("k1",), None) and not key_ok(("k1",), "k2")


def test_rate_limit_allows_bursts_of_two_seconds_then_the_rate():
    rl = RateLimit(10, now=0.0)
    assert sum(rl.allow(0.0) for _ in range(30)) == 20
    assert rl.allow(0.1) and not rl.allow(0.1)


# -- audio --------------------------------------------------------------------------------------------------
def tone(seconds, rate, freq=440.0):
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t) * 32767).astype("<i2")


def peak_hz(pcm):
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float32)))
    return np.argmax(spectrum) * 16000 / len(pcm)


def test_raw_linear16_at_any_rate_and_channel_count_becomes_16k_mono():
    for rate, channels in ((16000, 1), (48000, 2), (44100, 1), (8000, 1)):
        got = []
        raw = RawAudio("linear16", rate, channels, got.append)
        data = np.repeat(tone(1.0, rate), channels).tobytes()
        for i in range(0, len(data), 999):  # chunks that split samples
            raw.feed(data[i:i + 999])
        asyncio.run(raw.finish())
        pcm = np.concatenate(got)
        assert abs(len(pcm) - 16000) <= 40, (rate, len(pcm))
        assert abs(peak_hz(pcm) - 440) < 5, rate


def test_mulaw_is_decoded():
    import av

    enc = av.CodecContext.create("pcm_mulaw", "w")
    enc.sample_rate, enc.layout, enc.format = 8000, "mono", "s16"
    frame = av.AudioFrame.from_ndarray(tone(1.0, 8000).reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = 8000
    data = b"".join(bytes(p) for p in enc.encode(frame) + enc.encode(None))
    got = []
    raw = RawAudio("mulaw", 8000, 1, got.append)
    raw.feed(data)
    asyncio.run(raw.finish())
    assert abs(peak_hz(np.concatenate(got)) - 440) < 5


def test_bad_raw_settings_are_refused():
    with pytest.raises(AudioError):
        RawAudio("linear32", 16000, 1, print)
    with pytest.raises(AudioError):
        RawAudio("mulaw", 8000, 6, print)


def ogg_opus(pcm16: np.ndarray) -> bytes:
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="ogg") as out:
        st = out.add_stream("libopus", rate=48000)
        st.layout = "mono"
        rs = av.AudioResampler(format="s16", layout="mono", rate=48000)
        frame = av.AudioFrame.from_ndarray(pcm16.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = 16000
        for f in rs.resample(frame) + rs.resample(None):
            for pkt in st.encode(f):
                out.mux(pkt)
        for pkt in st.encode(None):
            out.mux(pkt)
    return buf.getvalue()


def test_a_container_stream_is_decoded_as_it_arrives_and_garbage_is_reported():
    data = ogg_opus(tone(2.0, 16000))

    async def run(payload):
        got, errors = [], []
        dec = ContainerAudio(got.append, errors.append)
        for i in range(0, len(payload), 1500):
            dec.feed(payload[i:i + 1500])
            await asyncio.sleep(0.002)
        await dec.finish()
        return got, errors

    got, errors = asyncio.run(run(data))
    pcm = np.concatenate(got)
    assert not errors and abs(len(pcm) - 32000) < 400 and abs(peak_hz(pcm) - 440) < 5
    got, errors = asyncio.run(run(bytes(range(256)) * 40))
    assert errors and isinstance(errors[0], AudioError)


def test_decode_file_reads_containers_and_refuses_garbage():
    pcm = decode_file(ogg_opus(tone(1.0, 16000)))
    assert pcm.dtype == np.int16 and abs(len(pcm) - 16000) < 400
    with pytest.raises(AudioError):
        decode_file(b"not audio at all" * 100)


# -- Deepgram's query parameters ----------------------------------------------------------------------------
def test_listen_options_map_or_refuse_deepgrams_query_parameters():
    from workers.gateway.deepgram import ListenOptions, OptionError

    o = ListenOptions.parse({"encoding": "linear16", "sample_rate": "48000", "interim_results": "true",
                             "endpointing": "300", "utterance_end_ms": "1000", "punctuate": "true",
                             "model": "nova-3", "language": "en", "diarize": "true"})
    assert (o.encoding, o.sample_rate, o.interim_results, o.endpointing, o.utterance_end_ms) == \
        ("linear16", 48000, True, True, 1000)
    assert ListenOptions.parse({"endpointing": "false"}).endpointing is False
    assert ListenOptions.parse({}).encoding is None  # a container, told by its bytes
    for bad in ({"encoding": "bogus"}, {"encoding": "linear16"}, {"multichannel": "true"},
                {"interim_results": "maybe"}, {"sample_rate": "12"},
                {"encoding": "mulaw", "sample_rate": "8000", "channels": "4"}):
        with pytest.raises(OptionError):
            ListenOptions.parse(bad)


# -- config ---------------------------------------------------------------------------------------------------
def test_gateway_config_defaults_its_pool_and_refuses_exposure_without_keys(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text("workers:\n  - {name: tiny}\n  - {name: tr, task: translate, model: base}\n"
                    "gateway: {enabled: true, port: 8123, tcp_port: 43123}\n")
    cfg = load_config(path, check_files=False)
    assert (cfg.gateway.pool, cfg.gateway.translate_pool) == ("tiny", "tr")
    assert cfg.actor_names()[-1] == "gateway"
    for body, message in (
        ("gateway: {enabled: true, host: 0.0.0.0}\n", "set gateway.api_keys"),
        ("gateway: {enabled: true, host: 0.0.0.0, api_keys: [k], tcp_port: 43007}\n", "TCP protocol"),
        ("bus: {xsub: 'tcp://127.0.0.1:7801', xpub: 'tcp://127.0.0.1:7802'}\ngateway: {enabled: true, port: 7801}\n",
         "clashes with bus.xsub"),
        ("gateway: {enabled: true, max_connections: 0}\n", "max_connections"),
    ):
        path.write_text(body)
        with pytest.raises(ConfigError, match=message):
            load_config(path, check_files=False)


def test_the_gateway_is_a_process_of_the_plan_stopped_with_the_sources(tmp_path):
    from apps.plan import actor_processes, stop_stages

    path = tmp_path / "g.yaml"
    path.write_text("workers:\n  - {name: asr}\ngateway: {enabled: true}\n")
    procs = actor_processes(load_config(path, check_files=False))
    gw = [p for p in procs if p.role == "serve"]
    assert len(gw) == 1 and gw[0].argv[-4:] == ("--config", str(path.resolve()), "--name", "gateway")
    assert stop_stages(procs)[0] == ["gateway"]
