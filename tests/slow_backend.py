"""The real tiny.en model on a device too slow for live audio, for the worker's keep-up tests.

Name it in a worker's config as ``backend: tests.slow_backend:SlowWhisper``. Each
``transcribe`` decodes with the real faster-whisper model, then waits until ``rtf``
(option, default 2.0) times the audio's duration has passed: what a backend at that
real-time factor does (mlx-whisper on a Linux CPU ran at 7). Waiting costs no CPU, so the
slowness is the same on a busy test machine.
"""

from __future__ import annotations

import time

from asr_core.backends.faster_whisper import FasterWhisperASR


class SlowWhisper(FasterWhisperASR):
    def load_model(self, modelsize=None, cache_dir=None, model_dir=None):
        self.slowdown = float(self.options.pop("rtf", 2.0))
        return super().load_model(modelsize, cache_dir, model_dir)

    def transcribe(self, audio, init_prompt: str = ""):
        t0 = time.perf_counter()
        result = super().transcribe(audio, init_prompt)
        left = self.slowdown * len(audio) / 16000 - (time.perf_counter() - t0)
        if left > 0:
            time.sleep(left)
        return result
