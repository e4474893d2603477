"""A custom engine as people bring it: one written for whisper_streaming's whisper_online.py.

The shape of whisper_online's faster-whisper engine class (``load_model`` that prefers
``model_dir`` over the model name and hands either straight to ``WhisperModel``;
``transcribe`` that returns the segments as a list; ``ts_words``; ``segments_end_ts``;
``use_vad``; ``set_translate_task``; ``sep = ""``), ported the way its users port it: the
base class becomes :class:`asr_core.base.ASRBase` and the device the CPU. Nothing in it
knows about voxpipe's bundled models, so ``--model tiny.en`` reaches ``WhisperModel`` as a
hub name unless voxpipe resolves it first.

Used by tests/test_custom_backend.py as ``tests.whisper_online_port:PortedFasterWhisperASR``.
"""

from __future__ import annotations

from asr_core.base import ASRBase


class PortedFasterWhisperASR(ASRBase):
    sep = ""  # faster-whisper puts the spaces in the words itself

    def load_model(self, modelsize=None, cache_dir=None, model_dir=None):
        from faster_whisper import WhisperModel

        if model_dir is not None:
            source = model_dir  # a folder wins; the name and the cache are not used then
        elif modelsize is not None:
            source = modelsize
        else:
            raise ValueError("set modelsize or model_dir")
        return WhisperModel(source, device="cpu", compute_type="int8", download_root=cache_dir)

    def transcribe(self, audio, init_prompt=""):
        segments, _info = self.model.transcribe(
            audio, language=self.original_language, initial_prompt=init_prompt, beam_size=5,
            word_timestamps=True, condition_on_previous_text=True, **self.transcribe_kargs)
        return list(segments)

    def ts_words(self, segments):
        words = []
        for segment in segments:
            if segment.no_speech_prob > 0.9:
                continue
            words += [(w.start, w.end, w.word) for w in segment.words]
        return words

    def segments_end_ts(self, segments):
        return [s.end for s in segments]

    def use_vad(self):
        self.transcribe_kargs["vad_filter"] = True

    def set_translate_task(self):
        self.transcribe_kargs["task"] = "translate"
