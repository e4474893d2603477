"""What a stream's source asks of the worker: the language spoken and the task.

Capture, the web page and the gateway put ``language`` and ``task`` on the audio frames of
a stream; the worker follows them where it can, per stream, before the stream's next step:

* a worker configured with a language keeps it; one with ``auto`` takes the stream's
  language (``auto``: detect it in every window);
* a task is taken by a backend that can change it per call;
* an English-only model, or a backend that cannot change language or task per call,
  ignores what it cannot do: the caller counts it (``hints_ignored``) and says so once.
"""

from __future__ import annotations

from asr_core.base import takes_per_call_settings


def follow_hints(asr, processor, language: str | None, task: str | None) -> list[str]:
    """Apply the source's ``language`` and ``task`` (None: no wish) to ``processor``, whose
    backend is ``asr``; returns what could not be followed (``["language de", ...]``)."""
    per_call = takes_per_call_settings(asr)
    multilingual = getattr(asr, "multilingual", True)
    ignored = []
    if language is not None and not getattr(asr, "original_language", None):
        wanted = None if language == "auto" else language
        if wanted is None or (per_call and (multilingual or wanted == "en")):
            processor.language.set_given(wanted)
        else:
            ignored.append(f"language {language}")
    if task is not None:
        if per_call and (multilingual or task == "transcribe"):
            processor.task = task
        else:
            ignored.append(f"task {task}")
    return ignored
