"""One step of a streaming processor as a coroutine: the decode it needs, then its outcome.

A step of :class:`asr_core.online.OnlineASRProcessor` (the next hypothesis, a pause flush,
a finish) is written once, as a generator that *yields* a :class:`DecodeRequest` (the audio
buffer, the prompt and the stream's language and task: what ``ASRBase.transcribe`` gets) and
is sent the backend's result back. Whoever drives it decides how the request is decoded: alone
(``OnlineASRProcessor.process_iter``: one ``transcribe`` call) or together with other
streams' requests in one batched call (:mod:`asr_core.batching`). The step does the same
either way: it sees the result for its own buffer, prompt, language and task.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class DecodeRequest:
    """One decode a step needs: what ``transcribe(audio, init_prompt=prompt, **settings())`` gets.

    ``language`` and ``task`` are the stream's per-call settings (the utterance's language,
    the stream's task), set only for a backend with ``Capabilities.per_call_settings``; None:
    the backend's own.
    """

    audio: np.ndarray
    prompt: str = ""
    language: str | None = None
    task: str | None = None

    def settings(self) -> dict:
        """The keyword arguments of ``transcribe`` beside the audio and prompt (only those set)."""
        out = {}
        if self.language:
            out["language"] = self.language
        if self.task:
            out["task"] = self.task
        return out

    def decode(self, asr):
        """This decode alone: ``asr.transcribe`` on the audio, with the prompt and the settings that are set."""
        return asr.transcribe(self.audio, init_prompt=self.prompt, **self.settings())


#: a step as a coroutine: yields requests, is sent ``(result, wall_seconds)``, returns its commit
StepCoroutine = Generator[DecodeRequest, tuple, Any]


class ProcessorStep:
    """One step of a processor in progress: the decode it waits for, then its commit.

    ``request`` is the :class:`DecodeRequest` the step waits for (None once it is done);
    :meth:`resume` hands the backend's result for it back; ``commit`` is the step's outcome
    once it is done. A step whose decode failed is simply dropped (the caller resets the
    processor, as after an exception from :meth:`OnlineASRProcessor.process_iter`).
    """

    def __init__(self, coroutine: StepCoroutine):
        self._coroutine = coroutine
        self.request: DecodeRequest | None = None
        self.commit: Any = None  # the step's Commit, once it is done
        self._advance(None)

    @property
    def done(self) -> bool:
        return self.request is None

    def resume(self, result, seconds: float) -> None:
        """The backend's ``result`` for :attr:`request`, which took ``seconds`` of wall time."""
        if self.request is None:
            raise RuntimeError("this step is not waiting for a decode")
        self._advance((result, float(seconds)))

    def _advance(self, value) -> None:
        try:
            self.request = self._coroutine.send(value)
        except StopIteration as stop:
            self.request = None
            self.commit = stop.value
