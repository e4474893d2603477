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
