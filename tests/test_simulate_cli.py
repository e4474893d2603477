"""``voxpipe simulate WAV``: output format, modes, audio conversion and errors.

* stdout holds one line per commit, ``EMIT_MS BEG_MS END_MS TEXT``, three
  integers with BEG <= END and EMIT non-decreasing;
* ``--offline`` transcribes the whole file in one pass;
* a WAV that is not 16 kHz mono is converted and still transcribes;
* a missing or unreadable WAV is one clear error line on stderr, exit code 2,
  no traceback;
* ``check_audio`` (and so every processor) rejects NaN samples.

The CLI runs in a subprocess on short excerpts of the clips, to keep it quick.
"""

from __future__ import annotations

import re
import wave
from pathlib import Path

import numpy as np
import pytest

from apps.bench.evaluation import normalize, wer
from asr_core.audio import AudioFileError, float_to_pcm16, load_audio
from asr_core.base import check_audio
from asr_core.online import OnlineASRProcessor
from tests.conftest import clip_path
from tests.fakes import ScriptedASR

LINE = re.compile(r"^(\d+) (\d+) (\d+) (\S.*)$")
SR = 16000
FIRST_TWO = "Thank you all for joining the meeting. The first item on the agenda is the budget for next year."
FIRST_ONE = "Thank you all for joining the meeting."


def write_wav(path: Path, audio: np.ndarray, rate: int = SR, channels: int = 1) -> Path:
    """16-bit PCM WAV; ``audio`` is (n,) or (n, channels) float in [-1, 1]."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(float_to_pcm16(np.asarray(audio).reshape(-1)))
    return path


@pytest.fixture(scope="module")
def excerpt(tmp_path_factory):
    """The first two sentences of meeting_gaps.wav (7.5 s, 16 kHz mono)."""
    audio = load_audio(clip_path("meeting_gaps"))[: int(7.5 * SR)]
    return write_wav(tmp_path_factory.mktemp("clips") / "two_sentences.wav", audio)


@pytest.fixture(scope="module")
def short_excerpt(tmp_path_factory):
    """The first sentence of meeting_gaps.wav (3.0 s, 16 kHz mono)."""
    audio = load_audio(clip_path("meeting_gaps"))[: 3 * SR]
    return write_wav(tmp_path_factory.mktemp("clips") / "one_sentence.wav", audio)


def parse(stdout: str) -> list[tuple[int, int, int, str]]:
    rows = []
    for line in stdout.splitlines():
        m = LINE.match(line)
        assert m, f"stdout line is not 'EMIT_MS BEG_MS END_MS TEXT': {line!r}"
        rows.append((int(m[1]), int(m[2]), int(m[3]), m[4]))
    return rows


def assert_well_formed(rows, duration_ms: float):
    assert rows, "no output"
    for emit, beg, end, text in rows:
        assert 0 <= beg <= end <= duration_ms + 1, (emit, beg, end, text)
        assert text.strip() == text and text
    emits = [r[0] for r in rows]
    assert emits == sorted(emits), f"EMIT decreases: {emits}"


def one_error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one error line, got: {stderr!r}"
    assert "Traceback" not in stderr
    return lines[0]


# -- output format and modes --------------------------------------------------------


@pytest.mark.model
def test_comp_unaware_output_is_one_line_per_commit_in_stream_order(voxpipe_cli, excerpt):
    proc = voxpipe_cli("simulate", str(excerpt), "--comp-unaware", "--lan", "en")
    assert proc.returncode == 0, proc.stderr
    rows = parse(proc.stdout)
    assert_well_formed(rows, 7500)
    assert len(rows) >= 3  # streamed, not one final blob
    for emit, _beg, end, _ in rows:
        # without a clock, EMIT is the audio time at the commit: no word is
        # emitted before its audio has arrived
        assert end <= emit
    # commits come in stream order
    for prev, row in zip(rows, rows[1:], strict=False):
        assert row[1] >= prev[2] - 100, (prev, row)
    # the last words come out at the pause after them (the VAD's speech end), or at the end of the audio
    assert rows[-1][0] <= 7500 and rows[-1][2] <= rows[-1][0]
    text = " ".join(r[3] for r in rows)
    assert wer(FIRST_TWO, text) <= 0.25, text
    # logs go to stderr, never to stdout
    assert "INFO" not in proc.stdout


@pytest.mark.model
@pytest.mark.realtime
def test_real_time_mode_emits_in_wall_clock_order(voxpipe_cli, short_excerpt):
    proc = voxpipe_cli("simulate", str(short_excerpt), "--lan", "en", "--min-chunk-size", "1.0")
    assert proc.returncode == 0, proc.stderr
    rows = parse(proc.stdout)
    assert_well_formed(rows, 3000)
    # the audio "arrives" at wall-clock speed: no word comes out before it was spoken, and the
    # last one (heard at the pause after the sentence, ~2.6 s, or at the end) no sooner than that
    assert all(end <= emit for emit, _beg, end, _ in rows)
    assert rows[-1][0] >= 2400
    assert "meeting" in normalize(" ".join(r[3] for r in rows)).split()


@pytest.mark.model
def test_offline_mode_prints_the_whole_file_in_one_line(voxpipe_cli, excerpt):
    proc = voxpipe_cli("simulate", str(excerpt), "--offline", "--lan", "en")
    assert proc.returncode == 0, proc.stderr
    rows = parse(proc.stdout)
    assert len(rows) == 1
    assert_well_formed(rows, 7500)
    emit, beg, end, text = rows[0]
    assert beg < 500 and end > 6000
    assert wer(FIRST_TWO, text) <= 0.25, text


# -- audio conversion ----------------------------------------------------------------


def stereo_44k(audio16k: np.ndarray) -> np.ndarray:
    n = int(round(len(audio16k) * 44100 / SR))
    x = np.interp(np.arange(n) * SR / 44100, np.arange(len(audio16k)), audio16k)
    # left: the speech; right: the speech at half volume
    return np.stack([x, 0.5 * x], axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def stereo_excerpt(tmp_path_factory):
    audio = load_audio(clip_path("meeting_gaps"))[: 3 * SR]
    return write_wav(tmp_path_factory.mktemp("clips") / "stereo44k.wav", stereo_44k(audio), rate=44100, channels=2)


def test_a_stereo_44k_wav_is_loaded_as_16k_mono(stereo_excerpt):
    original = load_audio(clip_path("meeting_gaps"))[: 3 * SR]
    audio = load_audio(stereo_excerpt)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - len(original)) <= 0.01 * SR
    n = min(len(audio), len(original))
    # the same sound (the mix of both channels), at the same time
    corr = np.corrcoef(audio[:n], original[:n])[0, 1]
    assert corr > 0.9, corr


@pytest.mark.model
def test_cli_converts_a_stereo_44k_wav_and_transcribes_it(voxpipe_cli, stereo_excerpt):
    proc = voxpipe_cli("simulate", str(stereo_excerpt), "--offline", "--lan", "en")
    assert proc.returncode == 0, proc.stderr
    rows = parse(proc.stdout)
    assert_well_formed(rows, 3000)
    assert wer(FIRST_ONE, rows[0][3]) <= 0.25, rows


# -- errors -------------------------------------------------------------------------------


def test_a_missing_wav_is_one_error_line_and_exit_code_2(voxpipe_cli, tmp_path):
    missing = tmp_path / "nope.wav"
    proc = voxpipe_cli("simulate", str(missing), "--comp-unaware")
    assert proc.returncode == 2
    assert proc.stdout == ""
    line = one_error_line(proc.stderr)
    assert str(missing) in line and "not found" in line


@pytest.mark.parametrize(
    "content",
    [b"this is not audio at all\n" * 10, b"RIFF\x24\x00\x00\x00WAVEfmt ", b""],
    ids=["text", "truncated-header", "empty-file"],
)
def test_an_unreadable_wav_is_one_error_line_and_exit_code_2(voxpipe_cli, tmp_path, content):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(content)
    proc = voxpipe_cli("simulate", str(bad), "--comp-unaware")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert str(bad) in one_error_line(proc.stderr)


def test_a_wav_without_samples_is_an_error_not_an_empty_transcript(voxpipe_cli, tmp_path):
    empty = write_wav(tmp_path / "silent.wav", np.zeros(0, dtype=np.float32))
    with pytest.raises(AudioFileError, match="no samples"):
        load_audio(empty)
    proc = voxpipe_cli("simulate", str(empty), "--comp-unaware")
    assert proc.returncode == 2 and proc.stdout == ""
    assert "no samples" in one_error_line(proc.stderr)
    # the same for a file that needs conversion
    empty_44k = write_wav(tmp_path / "silent44k.wav", np.zeros((0, 2), dtype=np.float32), rate=44100, channels=2)
    with pytest.raises(AudioFileError):
        load_audio(empty_44k)


def test_a_directory_is_not_an_audio_file(tmp_path):
    with pytest.raises(AudioFileError, match="not found"):
        load_audio(tmp_path)


# -- check_audio ----------------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_check_audio_rejects_nan_and_infinite_samples(bad):
    audio = np.zeros(1600, dtype=np.float32)
    audio[100] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        check_audio(audio)


def test_check_audio_rejects_multichannel_and_converts_to_contiguous_float32():
    with pytest.raises(ValueError, match="mono"):
        check_audio(np.zeros((100, 2), dtype=np.float32))
    out = check_audio(np.zeros(200, dtype=np.float64)[::2])
    assert out.dtype == np.float32 and out.flags["C_CONTIGUOUS"] and len(out) == 100


def test_a_processor_refuses_nan_audio_and_keeps_its_buffer():
    proc = OnlineASRProcessor(ScriptedASR(["hello"]))
    proc.insert_audio_chunk(np.zeros(SR, dtype=np.float32))
    bad = np.zeros(SR, dtype=np.float32)
    bad[5] = np.nan
    with pytest.raises(ValueError):
        proc.insert_audio_chunk(bad)
    assert proc.buffer_duration == 1.0
    assert np.isfinite(proc.audio_buffer).all()


# -- whisper_streaming's own command lines ------------------------------------------------
# Every flag of whisper_online.py (its argument parser and the README's usage), spelled its way.
WHISPER_ONLINE_ARGS = [
    "--min-chunk-size", "1", "--model", "tiny.en", "--model_cache_dir", "/tmp/cache", "--model_dir", "/tmp/model",
    "--lan", "en", "--task", "transcribe", "--backend", "faster-whisper", "--vac", "--vac-chunk-size", "0.04",
    "--vad", "--buffer_trimming", "sentence", "--buffer_trimming_sec", "12", "-l", "CRITICAL",
    "--start_at", "2.5", "--offline", "--comp_unaware",
]
WO_LINE = re.compile(r"^(\d+\.\d{4}) (\d+) (\d+) (.*)$")


def test_every_whisper_online_flag_is_accepted_in_its_own_spelling():
    from tests.conftest import parse_simulate_args

    a = parse_simulate_args(["talk.wav", *WHISPER_ONLINE_ARGS])
    assert (a.min_chunk_size, a.model, a.model_cache_dir, a.model_dir) == (1.0, "tiny.en", "/tmp/cache", "/tmp/model")
    assert (a.lan, a.task, a.backend) == ("en", "transcribe", "faster-whisper")
    assert a.vac and a.vac_chunk_size == 0.04 and a.vad
    assert (a.buffer_trimming, a.buffer_trimming_sec, a.log_level) == ("sentence", 12.0, "CRITICAL")
    assert a.start_at == 2.5 and a.offline and a.comp_unaware  # both modes together, as whisper_online parses them
    # --language is whisper_online's other spelling of --lan; voxpipe's own spellings still work
    b = parse_simulate_args(["talk.wav", "--language", "de", "--model-dir", "/m", "--buffer-trimming-sec", "9",
                             "--comp-unaware", "--start-at", "1", "--log-level", "WARNING"])
    assert (b.lan, b.model_dir, b.buffer_trimming_sec, b.comp_unaware, b.start_at, b.log_level) == (
        "de", "/m", 9.0, True, 1.0, "WARNING")


def test_the_whisper_online_line_format_is_its_printf_format_with_the_backends_text():
    import io

    from apps.simulate import Printer
    from asr_core.online import Commit

    commit = Commit(0.3, 1.38, "Chairman, thank you.", ((0.3, 0.9, "Chairman,"), (1.0, 1.38, "thank you.")),
                    " Chairman, thank you.")
    out = io.StringIO()
    Printer(out, "whisper_online").emit(commit, 2.6914399)
    Printer(out, "voxpipe").emit(commit, 2.6914399)
    wo, vp = out.getvalue().splitlines()
    assert wo == "%1.4f %1.0f %1.0f %s" % (2691.4399, 300, 1380, " Chairman, thank you.")  # noqa: UP031
    assert wo == "2691.4399 300 1380  Chairman, thank you."
    assert vp == "2691 300 1380 Chairman, thank you."


@pytest.mark.model
def test_the_readme_command_line_of_whisper_online_runs(voxpipe_cli, short_excerpt, tmp_path):
    """whisper_streaming's README: ``whisper_online.py en-demo16.wav --language en --min-chunk-size 1 > out.txt``."""
    proc = voxpipe_cli("simulate", str(short_excerpt), "--language", "en", "--min-chunk-size", "1")
    assert proc.returncode == 0, proc.stderr
    rows = parse(proc.stdout)
    assert_well_formed(rows, 3000)
    assert wer(FIRST_ONE, " ".join(r[3] for r in rows)) <= 0.25, rows


@pytest.mark.model
def test_a_whisper_online_command_line_with_every_flag_runs(voxpipe_cli, excerpt):
    """All of whisper_online.py's flags at once (but --offline), lines in its format, from --start_at on."""
    from asr_core.models import bundled_location
    from tests.conftest import silences

    gap_beg, gap_end = silences("meeting_gaps")[0]  # between the first two sentences
    start = round((gap_beg + gap_end) / 2, 2)
    args = [a for a in WHISPER_ONLINE_ARGS if a != "--offline"]
    args[args.index("/tmp/model")] = bundled_location("tiny.en")
    args[args.index("/tmp/cache")] = str(excerpt.parent / "cache")
    args[args.index("2.5")] = str(start)
    proc = voxpipe_cli("simulate", str(excerpt), *args, "--format", "whisper_online")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # -l CRITICAL: nothing below CRITICAL is logged
    lines = proc.stdout.splitlines()
    assert lines, "no output"
    rows = []
    for line in lines:
        mt = WO_LINE.match(line)
        assert mt, f"not whisper_online's '%1.4f %1.0f %1.0f TEXT': {line!r}"
        rows.append((float(mt[1]), int(mt[2]), int(mt[3]), mt[4]))
    # faster-whisper's words carry their leading space, and the text is printed as it gave it
    assert all(text.startswith(" ") for *_, text in rows), rows
    # times stay on the file's clock and nothing before --start_at is heard
    assert all(start * 1000 - 1 <= beg <= end <= emit + 1 for emit, beg, end, _ in rows), rows
    heard = " ".join(text for *_, text in rows)
    assert wer("The first item on the agenda is the budget for next year.", heard) <= 0.25, heard
    assert "thank" not in normalize(heard).split()


@pytest.mark.model
def test_offline_and_comp_unaware_together_emit_the_whole_file_at_its_end(voxpipe_cli, excerpt):
    proc = voxpipe_cli("simulate", str(excerpt), "--offline", "--comp_unaware", "--lan", "en",
                       "--format", "whisper_online")
    assert proc.returncode == 0, proc.stderr
    (line,) = proc.stdout.splitlines()
    mt = WO_LINE.match(line)
    assert mt and mt[1] == "7500.0000", line  # the clock stops while decoding: emitted at the end of the audio
    assert int(mt[2]) < 500 and int(mt[3]) > 6000
    assert wer(FIRST_TWO, mt[4]) <= 0.25, line
