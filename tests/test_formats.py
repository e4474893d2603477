"""Transcript formats and file outputs: timestamps, cue splitting, SRT/VTT/JSONL/TXT content, console lines."""

import io
import json

import pytest

from pipeline import formats as f
from pipeline import messages as m
from pipeline.outputs import CueOutput, JsonlOutput, TextOutput, pair_path, parse_output
from workers.console import ConsoleOutput


def commit(words, worker="asr", stream="s", seq=0, text=None):
    text = "".join(w for _, _, w in words) if text is None else text
    beg = words[0][0] if words else 0.0
    end = words[-1][1] if words else 0.0
    return m.Commit(stream=stream, seq=seq, beg=beg, end=end, text=text, words=[list(w) for w in words],
                    worker=worker, backend="faster-whisper", model="tiny.en", emitted=1000.0, wall0=990.0)


def timed(text, start=0.0, step=0.4):
    """Words of ``text`` one after another, ``step`` seconds each, with leading spaces like faster-whisper."""
    return [(round(start + i * step, 3), round(start + (i + 1) * step, 3), " " + w) for i, w in enumerate(text.split())]


# -- timestamps ----------------------------------------------------------------------------
@pytest.mark.parametrize("seconds, srt, vtt", [
    (0, "00:00:00,000", "00:00:00.000"),
    (1.0, "00:00:01,000", "00:00:01.000"),
    (61.25, "00:01:01,250", "00:01:01.250"),
    (3723.4567, "01:02:03,457", "01:02:03.457"),
    (59.9996, "00:01:00,000", "00:01:00.000"),  # rounding carries into the minutes
    (-0.2, "00:00:00,000", "00:00:00.000"),
])
def test_timestamp_formats(seconds, srt, vtt):
    assert f.srt_time(seconds) == srt
    assert f.vtt_time(seconds) == vtt


# -- cues --------------------------------------------------------------------------------------
def cues_of(*commits):
    b = f.CueBuilder()
    out = []
    for c in commits:
        out += b.add(f.commit_words(c))
    return out + b.flush()


def test_cues_split_at_sentence_ends():
    cues = cues_of(commit(timed("Good morning everyone. The weather is fine today.")))
    assert [c.text for c in cues] == ["Good morning everyone.", "The weather is fine today."]
    assert cues[0].beg == 0.0 and cues[0].end == pytest.approx(1.2)
    assert cues[1].beg == pytest.approx(1.2) and cues[1].end == pytest.approx(3.2)


def test_cue_never_longer_than_seven_seconds():
    words = timed(" ".join(f"w{i}" for i in range(30)), step=0.5)  # 15 s of short words, no punctuation
    cues = cues_of(commit(words))
    assert len(cues) == 3
    assert all(c.end - c.beg <= f.MAX_CUE_SECONDS + 1e-9 for c in cues)
    assert " ".join(c.text for c in cues) == " ".join(f"w{i}" for i in range(30))


def test_cue_never_longer_than_84_chars_and_cut_at_a_late_comma():
    text = "one two three four five six seven eight nine ten eleven, twelve thirteen fourteen fifteen sixteen seventeen"
    cues = cues_of(commit(timed(text, step=0.1)))
    assert all(len(c.text) <= f.MAX_CUE_CHARS for c in cues)
    # "seventeen" overflows; the cue is cut after the comma, and the words after it carry on
    assert [c.text for c in cues] == ["one two three four five six seven eight nine ten eleven,",
                                      "twelve thirteen fourteen fifteen sixteen seventeen"]
    assert cues[1].beg == pytest.approx(1.1)


def test_cue_overflow_without_a_late_comma_cuts_before_the_word():
    text = "alpha, beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau"
    cues = cues_of(commit(timed(text, step=0.1)))
    assert all(len(c.text) <= f.MAX_CUE_CHARS for c in cues)
    assert cues[0].text.startswith("alpha, beta") and len(cues) == 2
    assert " ".join(c.text for c in cues) == text


def test_cue_ends_at_a_long_pause():
    words = timed("before the pause", 0.0) + timed("after it", 5.0)
    cues = cues_of(commit(words))
    assert [c.text for c in cues] == ["before the pause", "after it"]


def test_cue_continues_across_commits_until_the_sentence_ends():
    c1 = commit(timed("This sentence spans", 0.0), seq=0)
    c2 = commit(timed("two commits. Next", 1.2), seq=1)
    b = f.CueBuilder()
    assert b.add(f.commit_words(c1)) == []  # nothing complete yet
    done = b.add(f.commit_words(c2))
    assert [c.text for c in done] == ["This sentence spans two commits."]
    assert [c.text for c in b.flush()] == ["Next"]


def test_commit_without_words_is_spread_over_its_span():
    c = m.Commit(stream="s", seq=0, beg=2.0, end=4.0, text=" one two three four", words=[])
    words = f.commit_words(c)
    assert [w.text for w in words] == ["one", "two", "three", "four"]
    assert words[0].beg == 2.0 and words[-1].end == 4.0


def test_srt_and_vtt_rendering():
    cues = [f.Cue(0.5, 1.3, "Hello there."),
            f.Cue(1.5, 4.0, "A longer second cue that needs to be wrapped onto two lines.")]
    srt = f.render_srt(cues)
    assert srt == (
        "1\n00:00:00,500 --> 00:00:01,300\nHello there.\n\n"
        "2\n00:00:01,500 --> 00:00:04,000\nA longer second cue that needs\nto be wrapped onto two lines.\n"
    )
    vtt = f.render_vtt(cues)
    assert vtt.startswith("WEBVTT\n\n00:00:00.500 --> 00:00:01.300\nHello there.\n")
    assert "00:00:01.500 --> 00:00:04.000\nA longer second cue that needs\nto be wrapped onto two lines.\n" in vtt


def test_cues_are_tidied_no_overlap_no_zero_length():
    cues = f.tidy_cues([f.Cue(2.0, 2.0, "b"), f.Cue(0.0, 2.5, "a")])
    assert [(c.text, c.beg, c.end) for c in cues] == [("a", 0.0, 2.0), ("b", 2.0, 2.1)]


# -- JSONL / TXT -------------------------------------------------------------------------------------
def test_jsonl_record_keeps_every_field_and_tags_the_worker():
    c = commit(timed("Hi there."), worker="tiny", stream="mic")
    rec = json.loads(f.jsonl_line("transcript.tiny.mic", c, received=1234.5))
    assert rec["kind"] == "commit" and rec["topic"] == "transcript.tiny.mic"
    assert rec["worker"] == "tiny" and rec["stream"] == "mic" and rec["seq"] == 0
    assert rec["text"] == " Hi there." and rec["words"][1] == [0.4, 0.8, " there."]
    assert rec["model"] == "tiny.en" and rec["emitted"] == 1000.0 and rec["received"] == 1234.5
    eos = json.loads(f.jsonl_line("transcript.tiny.mic", m.EndOfStream(stream="mic", seq=3, t=9.5)))
    assert eos["kind"] == "eos" and eos["worker"] == "tiny" and eos["t"] == 9.5


def test_jsonl_output_appends_and_syncs(tmp_path):
    path = tmp_path / "sub" / "t.jsonl"
    out = JsonlOutput(path)
    out.commit("asr", "s", "transcript.asr.s", commit(timed("one."), seq=0))
    # readable at once, before close: flushed after each record
    assert json.loads(path.read_text().splitlines()[0])["text"] == " one."
    out.error("asr", "s", "transcript.asr.s", m.Error(stream="s", seq=1, message="boom", worker="asr"))
    out.eos("asr", "s", "transcript.asr.s", m.EndOfStream(stream="s", seq=2, worker="asr"))
    out.close()
    out2 = JsonlOutput(path)  # a restarted sink appends
    out2.commit("asr", "s", "transcript.asr.s", commit(timed("two."), seq=0))
    out2.close()
    kinds = [json.loads(line)["kind"] for line in path.read_text().splitlines()]
    assert kinds == ["commit", "error", "eos", "commit"]


def test_txt_output_one_paragraph_per_pair(tmp_path):
    path = tmp_path / "t.txt"
    out = TextOutput(path)
    out.commit("asr", "a", "", commit(timed("Hello world."), stream="a"))
    assert path.read_text() == "Hello world.\n"
    out.commit("asr", "a", "", commit(timed("Second bit."), stream="a"))
    out.commit("asr", "b", "", commit(timed("Other stream."), stream="b"))
    assert path.read_text() == "[asr/a] Hello world. Second bit.\n\n[asr/b] Other stream.\n"


def test_cue_output_rewrites_as_cues_complete_and_finalises_at_eos(tmp_path):
    path = tmp_path / "t.srt"
    out = CueOutput(path, "srt")
    out.commit("asr", "s", "", commit(timed("First sentence. And then")))
    assert path.read_text() == "1\n00:00:00,000 --> 00:00:00,800\nFirst sentence.\n"
    out.eos("asr", "s", "", m.EndOfStream(stream="s", seq=1))
    assert path.read_text().endswith("2\n00:00:00,800 --> 00:00:01,600\nAnd then\n")
    assert not list(tmp_path.glob(".*tmp"))  # no temp file left behind


def test_cue_output_separate_files_per_worker_and_stream(tmp_path):
    path = tmp_path / "t.vtt"
    out = CueOutput(path, "vtt")
    out.commit("tiny", "s", "", commit(timed("From tiny."), worker="tiny"))
    out.commit("base", "s", "", commit(timed("From base."), worker="base"))
    out.close()
    assert "From tiny." in path.read_text()  # the first pair keeps PATH
    other = pair_path(path, "base", "s")
    assert other.name == "t.base.s.vtt" and "From base." in other.read_text()
    several = CueOutput(tmp_path / "x.vtt", "vtt", several=True)
    several.commit("tiny", "s", "", commit(timed("Hi."), worker="tiny"))
    assert (tmp_path / "x.tiny.s.vtt").is_file() and not (tmp_path / "x.vtt").exists()


def test_parse_output():
    assert parse_output("console") == ("console", "")
    kind, path = parse_output("srt:out/a.srt")
    assert kind == "srt" and path.endswith("/out/a.srt") and path.startswith("/")
    for bad in ("mp3:x", "jsonl", "jsonl:", "console:x"):
        with pytest.raises(ValueError):
            parse_output(bad)


# -- console ------------------------------------------------------------------------------------------
def test_console_plain_lines_without_a_tty():
    out = io.StringIO()
    con = ConsoleOutput(out=out, tty=False)
    con.partial("asr", "s", "", m.Partial(stream="s", seq=0, text="hel"))
    con.commit("asr", "s", "", commit(timed("Hello there.")))
    con.commit("asr", "s", "", commit(timed("Bye.")))
    assert out.getvalue() == "Hello there.\nBye.\n"  # no partials, no escape codes
    con.commit("asr", "t", "", commit(timed("Other."), stream="t"))
    assert out.getvalue().endswith("[asr/t] Other.\n")  # labelled once there are several


def test_console_tty_shows_the_partial_after_the_committed_text():
    out = io.StringIO()
    con = ConsoleOutput(out=out, tty=True, width=60)
    con.commit("asr", "s", "", commit(timed("Hello there.")))
    con.partial("asr", "s", "", m.Partial(stream="s", seq=0, text=" how are"))
    last = out.getvalue().rsplit("\r", 1)[-1]
    assert last == "\x1b[KHello there. \x1b[2mhow are\x1b[0m"
    con.commit("asr", "s", "", commit(timed("How are you?")))
    assert out.getvalue().rsplit("\r", 1)[-1] == "\x1b[KHello there. How are you?"
    con.eos("asr", "s", "", m.EndOfStream(stream="s", seq=1))
    assert out.getvalue().endswith("Hello there. How are you?\n")
