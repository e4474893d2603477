"""In-process measurements with the worker's own backend, model and options.

* :func:`offline_clip`: one pass over the whole clip (``transcribe`` +
  ``ts_words``): the offline WER (and formatted WER, and the sentence ends)
  beside which the streaming transcript is judged, and what that pass costs
  in CPU seconds per second of audio.
* :func:`decode_replay`: the speech the worker was sent during a round
  (recorded from ``speech.<stream>``) fed again to an
  :class:`asr_core.streaming.StreamingSession` with the worker's schedule and
  options (the same class the worker uses), to see where a worker's CPU goes: how many
  decodes, how much audio each one covers, what each one costs. The worker
  itself publishes only its decode count and real-time factor; the replay
  schedules decodes as a one-stream worker does when each decode is faster
  than ``min_chunk_size`` (it ignores the time decoding takes).

These run after the pipeline has stopped, so they do not compete with it.
"""

from __future__ import annotations

import time

from .metrics import _r, formatted_errors, ratio, word_errors


def load_backend(w):
    from asr_core.registry import create_backend

    asr = create_backend(w.backend, w.language, w.model, cache_dir=w.cache_dir, model_dir=w.model_dir, task=w.task,
                         **dict(w.options))
    import numpy as np

    asr.transcribe(np.zeros(16000, dtype=np.float32))  # warm-up, as the worker does
    return asr


def offline_clip(asr, clip) -> dict:
    from asr_core.audio import load_audio

    audio = load_audio(clip.wav)
    c0, t0 = time.process_time(), time.perf_counter()
    words = asr.ts_words(asr.transcribe(audio))
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    text = getattr(asr, "sep", " ").join(w[2] for w in words).strip()
    err, ref = word_errors(clip.text, text)
    ferr, fref = formatted_errors(clip.text, text)
    seconds = len(audio) / 16000
    return {"wer": _r(ratio(err, ref)), "word_errors": err, "ref_words": ref, "transcript": text,
            "formatted_wer": _r(ratio(ferr, fref)), "formatted_errors": ferr, "ref_tokens": fref,
            "cpu_s": _r(cpu), "wall_s": _r(wall), "cpu_per_audio_s": _r(cpu / seconds) if seconds else None,
            "missing": {}}


def decode_replay(asr, events: list, w) -> dict:
    """Replay ``("audio", t, pcm)`` / ``("end", t, None)`` / ``("eos", t, None)`` events through the worker's
    session."""
    from asr_core.audio import pcm16_to_float
    from asr_core.online import OnlineASRProcessor
    from asr_core.streaming import StreamingSession

    session = StreamingSession(OnlineASRProcessor(asr, options=w.streaming_options()), w.schedule())
    proc = session.processor
    flushes = 0
    c0 = time.process_time()
    for kind, t, pcm in events:
        if kind == "audio":
            session.push_audio(t, pcm16_to_float(pcm))
        elif kind == "end":
            flushes += 1
            session.push_pause()
        else:
            session.push_end()
        session.run_due()
    session.push_end()
    session.run_due()
    cpu = time.process_time() - c0
    st = proc.stats
    if not st.decodes:
        return {"decodes": 0, "missing": {"decoded_audio_per_decode_s": "no decodes (no speech was sent)"}}
    return {"decodes": st.decodes, "flushes": flushes, "speech_s": _r(st.audio_seconds, 3),
            "decoded_audio_s": _r(st.decoded_audio_seconds, 3),
            "decoded_audio_per_decode_s": _r(st.decoded_audio_seconds / st.decodes, 3),
            "decode_wall_per_decode_s": _r(st.decode_seconds / st.decodes),
            "cpu_s": _r(cpu), "cpu_per_decode_s": _r(cpu / st.decodes),
            "decodes_per_speech_s": _r(st.decodes / st.audio_seconds) if st.audio_seconds else None,
            "missing": {}}
