"""Batched short-window decoding on the PyTorch Whisper model (:mod:`.torch_model`).

:class:`TorchWindowDecoder` is the short-window decoder of :mod:`.ct2_window` (its window
rule, second window, grouping, segment split and word timing are inherited, so both
engines follow one rule) with the engine part done in PyTorch:

* one encoder call over the group's stacked features;
* one beam search over every stream of the group, each with its own prompt (left-padded,
  masked) and its own bounds (timestamps after the end of its audio are forbidden, and it
  stops after as many tokens as its window allows), with Whisper's timestamp rules
  (timestamps in pairs, never going back, the first within ``max_initial_timestamp``);
* one teacher-forced pass for the word times: the cross-attention of the alignment heads,
  normalised and median-filtered, aligned to the audio by dynamic time warping.

It needs only torch, numpy and the ``tokenizers`` package (no CTranslate2, no
faster-whisper), so it runs on a GPU machine that has nothing else.
"""

from __future__ import annotations

import string
from types import SimpleNamespace

import numpy as np
import torch

from ..result import compression_ratio
from .ct2_window import (
    FRAMES_PER_SECOND,
    HOP,
    MAX_FRAMES,
    SAMPLING_RATE,
    SECONDS_PER_TIMESTAMP,
    WindowDecoder,
    WindowOptions,
)
from .torch_model import DecoderCache, Whisper, log_mel

NO_SPACE_LANGUAGES = {"zh", "ja", "th", "lo", "my", "yue"}
MEDIAN_WIDTH = 7


class WhisperTokens:
    """Whisper's special tokens and word splitting over a ``tokenizers`` tokenizer (``tokenizer.json``)."""

    def __init__(self, hf, multilingual: bool, task: str = "transcribe", language: str = "en"):
        self.hf = hf
        self.language = language
        tid = hf.token_to_id
        self.sot, self.eot = tid("<|startoftranscript|>"), tid("<|endoftext|>")
        self.sot_prev, self.no_timestamps = tid("<|startofprev|>"), tid("<|notimestamps|>")
        self.no_speech = tid("<|nospeech|>") or tid("<|nocaptions|>")
        self.timestamp_begin = self.no_timestamps + 1
        self.sot_sequence = [self.sot]
        if multilingual:
            self.sot_sequence += [tid(f"<|{language}|>"), tid(f"<|{task}|>")]

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(text, add_special_tokens=False).ids

    def decode(self, tokens: list[int]) -> str:
        return self.hf.decode([t for t in tokens if t < self.eot])

    def split_to_word_tokens(self, tokens: list[int]) -> tuple[list[str], list[list[int]]]:
        """Words (with their leading space) and their tokens; the last item holds the end token."""
        pieces, piece_tokens, current = [], [], []
        for tok in tokens:  # pieces that decode to whole characters
            current.append(tok)
            text = self.hf.decode(current) if tok < self.eot else self.hf.id_to_token(tok)
            if "\ufffd" not in text:
                pieces.append(text)
                piece_tokens.append(current)
                current = []
        if self.language in NO_SPACE_LANGUAGES:
            return pieces, piece_tokens
        words: list[str] = []
        word_tokens: list[list[int]] = []
        for text, toks in zip(pieces, piece_tokens, strict=True):
            new_word = toks[0] >= self.eot or text.startswith(" ") or text.strip() in string.punctuation
            if new_word or not words:
                words.append(text)
                word_tokens.append(list(toks))
            else:
                words[-1] += text
                word_tokens[-1] += toks
        return words, word_tokens


def dtw(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The cheapest monotonic path through ``cost`` (``[tokens, frames]``): (token index, frame index) per step.

    Each row is done at once: ``c[j] = min(a[j], c[j-1] + x[j])`` (``a``: from the row above) is a
    running minimum over prefix sums, so the loop is over rows only.
    """
    n, m = cost.shape
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    trace = np.zeros((n + 1, m + 1), dtype=np.int8)  # 0: diagonal, 1: from above, 2: from the left
    trace[0, 1:] = 2
    trace[1:, 0] = 1
    for i in range(1, n + 1):
        x = cost[i - 1]
        diag, up = acc[i - 1, :-1], acc[i - 1, 1:]
        a = x + np.minimum(diag, up)
        prefix = np.cumsum(x)
        row = prefix + np.minimum.accumulate(a - prefix)
        acc[i, 1:] = row
        left = row < a - 1e-12
        trace[i, 1:] = np.where(left, 2, np.where(diag <= up, 0, 1))
    i, j = n, m
    path = []
    while i > 0 or j > 0:
        path.append((i - 1, j - 1))
        t = trace[i, j]
        if t == 0:
            i, j = i - 1, j - 1
        elif t == 1:
            i -= 1
        else:
            j -= 1
    path.reverse()
    steps = np.array([p for p in path if p[0] >= 0 and p[1] >= 0], dtype=np.int64).reshape(-1, 2)
    return steps[:, 0], steps[:, 1]


def _median_filter(x: torch.Tensor, width: int) -> torch.Tensor:
    """Median over the last axis (window ``width``, reflected at the edges)."""
    if width <= 1 or x.shape[-1] < width:
        return x
    pad = width // 2
    flat = x.reshape(-1, 1, x.shape[-1])  # reflect padding works on [batch, channels, length]
    padded = torch.nn.functional.pad(flat, (pad, pad), mode="reflect").reshape(*x.shape[:-1], -1)
    return padded.unfold(-1, width, 1).median(dim=-1).values


class TorchWindowDecoder(WindowDecoder):
    prompt_share = None  # prompts of any lengths batch together: they are left-padded and masked

    def __init__(self, model: Whisper, config: dict, filters: torch.Tensor, hf_tokenizer, options: WindowOptions,
                 device: str, dtype):
        self.model, self.config, self.filters = model, config, filters
        self.hf_tokenizer = hf_tokenizer
        self.options = options
        self.device, self.dtype = device, dtype
        self.multilingual = model.dims["n_vocab"] >= 51865
        self.n_vocab = model.dims["n_vocab"]
        heads: dict[int, list[int]] = {}
        for layer, head in config.get("alignment_heads") or []:
            heads.setdefault(int(layer), []).append(int(head))
        if not heads:  # no alignment heads known: the upper half of the decoder's heads
            n_layers, n_heads = model.dims["n_text_layer"], model.dims["n_text_head"]
            heads = {i: list(range(n_heads)) for i in range(n_layers // 2, n_layers)}
        self.alignment_heads = heads
        self.ct2 = SimpleNamespace(is_multilingual=self.multilingual)  # what the inherited code asks

    def _tokenizer(self, language, task):
        key = (language or "en", task)
        cache = self.__dict__.setdefault("_tokenizers", {})
        if key not in cache:
            cache[key] = WhisperTokens(self.hf_tokenizer, self.multilingual, task, key[0])
        return cache[key]

    # -- the engine part of a group ---------------------------------------------------------------------
    @torch.inference_mode()
    def _decode_group(self, items, audios, prompt_tokens, languages, task, results, detect=False,
                      detections=None) -> None:
        # each item has its own tokenizer (start sequence): a batch may mix languages. ``detect``
        # where a language is given is not done here (segments report the language decoded in).
        target = max(self.window_frames(len(audios[i])) for i in items)
        padded = torch.zeros(len(items), target * HOP, dtype=torch.float32)
        for k, i in enumerate(items):
            n = min(len(audios[i]), target * HOP)
            padded[k, :n] = torch.from_numpy(np.asarray(audios[i][:n], dtype=np.float32))
        mel = log_mel(padded.to(self.device), self.filters)[:, :, :target]
        if mel.shape[-1] < target:
            mel = torch.nn.functional.pad(mel, (0, target - mel.shape[-1]), mode="replicate")
        enc = self.model.encoder(mel.to(self.dtype))
        cross = self.model.decoder.cross_kv(enc)
        langs = [languages[i] for i in items]
        if self.multilingual and any(not lang for lang in langs):
            detected = self._detect_language(cross)
            langs = [lang or d for lang, d in zip(langs, detected, strict=True)]
        content = [min(len(audios[i]) // HOP, target) for i in items]
        durations = [c / FRAMES_PER_SECOND for c in content]
        tokenizers = [self._tokenizer(lang, task) for lang in langs]
        prompts = [self._prompt_sequence(t, prompt_tokens[i]) for t, i in zip(tokenizers, items, strict=True)]
        limits = [self._new_tokens(len(p), self._max_length(len(p), d))
                  for p, d in zip(prompts, durations, strict=True)]
        decoded = self._beam_search(cross, prompts, durations, limits, tokenizers[0])
        per_item = []
        for k, (tokens, logprob_sum, no_speech) in enumerate(decoded):
            segments = self._split(tokenizers[k], tokens, durations[k])
            ratio = compression_ratio("".join(s.text for s in segments))
            for s in segments:
                s.no_speech_prob = float(no_speech)
                s.avg_logprob = float(logprob_sum / (len(tokens) + 1))
                s.compression_ratio = ratio
                s.language = langs[k] or "en"
            per_item.append(segments)
        if self.options.word_timestamps and any(per_item):
            text_tokens = [[t for s in segs for t in s.tokens if t < tokenizers[k].eot]
                           for k, segs in enumerate(per_item)]
            aligned = self._align(cross, tokenizers, text_tokens, content)
            for k, segs in enumerate(per_item):
                if text_tokens[k]:
                    self._add_words(tokenizers[k], segs, aligned[k], text_tokens[k], durations[k])
        for i, segs, lang in zip(items, per_item, langs, strict=True):
            for s in segs:
                s.text = s.text.strip()
            results[i] = (segs, lang)

    def _detect_language(self, cross) -> list[str]:
        tok = self._tokenizer(None, "transcribe")
        lang_ids = [int(x) for x in self.config.get("lang_ids") or []]
        streams = cross[0][0].shape[0]
        cache = DecoderCache(self.model.decoder, streams, 1, self.dtype, self.device)
        tokens = torch.full((streams, 1), tok.sot, dtype=torch.long, device=self.device)
        logits = self.model.decoder(tokens, torch.zeros_like(tokens), cache, cross, None)[:, -1].float()
        best = logits[:, lang_ids].argmax(dim=-1).tolist()
        return [self.hf_tokenizer.id_to_token(lang_ids[b])[2:-2] for b in best]

    def _beam_search(self, cross, prompts, durations, limits, tok) -> list[tuple[list[int], float, float]]:
        """(tokens, sum of log probabilities, no-speech probability) of the best hypothesis of each stream."""
        o = self.options
        dev = self.device
        streams, beam = len(prompts), max(1, o.beam_size)
        rows = streams * beam
        plen = max(len(p) for p in prompts)
        steps = max(limits)
        pads = torch.tensor([plen - len(p) for p in prompts], device=dev).repeat_interleave(beam)
        tokens = torch.full((streams, plen), tok.eot, dtype=torch.long)
        for k, p in enumerate(prompts):
            tokens[k, plen - len(p):] = torch.tensor(p)
        tokens = tokens.to(dev).repeat_interleave(beam, dim=0)
        cache = DecoderCache(self.model.decoder, rows, plen + steps + 1, self.dtype, dev)
        key_pos = torch.arange(plen + steps + 1, device=dev)
        valid = key_pos[None, :] >= pads[:, None]  # [rows, max_length]: not padding
        q_pos = torch.arange(plen, device=dev)
        mask = valid[:, None, None, :plen] & (key_pos[None, None, :plen, None].transpose(-1, -2) <= q_pos[:, None])
        mask = mask | torch.eye(plen, dtype=torch.bool, device=dev)[None, None]  # a padded query sees itself
        positions = (q_pos[None, :] - pads[:, None]).clamp(min=0)
        logits = self.model.decoder(tokens, positions, cache, cross, mask)[:, -1].float()
        no_speech = torch.softmax(logits, dim=-1)[::beam, tok.no_speech].tolist()

        vocab = torch.arange(logits.shape[-1], device=dev)
        ts0 = tok.timestamp_begin
        always = torch.zeros(logits.shape[-1], dtype=torch.bool, device=dev)
        always[[int(i) for i in self.config.get("suppress_ids") or [] if 0 <= int(i) < len(always)]] = True
        always[tok.eot + 1:ts0] = True  # special tokens other than the end are never generated
        begin = torch.zeros_like(always)
        if o.suppress_blank:
            begin[[int(i) for i in self.config.get("suppress_ids_begin") or []]] = True
        n_ts = torch.tensor([int(round(d / SECONDS_PER_TIMESTAMP)) for d in durations], device=dev)
        ts_limit = (ts0 + n_ts + 6).repeat_interleave(beam)  # first forbidden timestamp of each row
        max_initial = ts0 + int(round(o.max_initial_timestamp / SECONDS_PER_TIMESTAMP))
        limit_rows = torch.tensor(limits, device=dev).repeat_interleave(beam)

        scores = torch.full((streams, beam), float("-inf"), device=dev)
        scores[:, 0] = 0.0  # all beams start as one
        scores = scores.view(-1)
        seqs = torch.zeros((rows, steps + 1), dtype=torch.long, device=dev)
        last_ts = torch.full((rows,), -1, dtype=torch.long, device=dev)  # last timestamp token, -1: none yet
        # before the first token both count as timestamps: after it, "the one before" is one (Whisper's rule)
        last_is_ts = torch.ones(rows, dtype=torch.bool, device=dev)
        penult_is_ts = torch.ones(rows, dtype=torch.bool, device=dev)
        finished: list[list[tuple[float, float, list[int]]]] = [[] for _ in range(streams)]
        done = [False] * streams
        for step in range(steps + 1):
            x = logits.masked_fill(always, float("-inf"))
            x = x.masked_fill(vocab[None, :] >= ts_limit[:, None], float("-inf"))
            is_ts = vocab[None, :] >= ts0
            if step == 0:
                x = x.masked_fill(begin, float("-inf"))
                x = x.masked_fill(~is_ts | (vocab[None, :] > max_initial), float("-inf"))
            else:
                pair_done = last_is_ts & penult_is_ts  # a segment just closed: text (or the end) next
                must_close = last_is_ts & ~penult_is_ts  # a timestamp opened... or closed: another or the end
                x = x.masked_fill(pair_done[:, None] & is_ts, float("-inf"))
                x = x.masked_fill(must_close[:, None] & (vocab[None, :] < tok.eot), float("-inf"))
                floor = torch.where(must_close, last_ts, last_ts + 1)
                x = x.masked_fill((last_ts[:, None] >= 0) & is_ts & (vocab[None, :] < floor[:, None]), float("-inf"))
                lp = torch.log_softmax(x, dim=-1)
                ts_mass = torch.logsumexp(lp[:, ts0:], dim=-1)
                text_best = lp[:, :ts0].max(dim=-1).values
                x = x.masked_fill((ts_mass > text_best)[:, None] & ~is_ts, float("-inf"))
            at_limit = step >= limit_rows  # this stream may take no more tokens: only the end
            x = x.masked_fill(at_limit[:, None] & (vocab[None, :] != tok.eot), float("-inf"))
            logprobs = torch.log_softmax(x, dim=-1)
            total = (scores[:, None] + logprobs).view(streams, beam * logprobs.shape[-1])
            top_scores, top_idx = total.topk(2 * beam, dim=-1)
            src = top_idx // logprobs.shape[-1]
            tokens_next = top_idx % logprobs.shape[-1]
            is_eot = tokens_next == tok.eot
            live_rank = torch.cumsum((~is_eot).long(), dim=-1) - 1
            live = ~is_eot & (live_rank < beam)
            # an end counts as finished when it ranks before the last surviving live beam
            last_live = torch.where(live, torch.arange(2 * beam, device=dev), -1).max(dim=-1).values
            ends = is_eot & (torch.arange(2 * beam, device=dev)[None, :] < last_live[:, None]) \
                & torch.isfinite(top_scores)
            if bool(ends.any()):
                for b, c in ends.nonzero().tolist():
                    if done[b] or len(finished[b]) >= beam:
                        continue
                    row = b * beam + int(src[b, c])
                    hyp = seqs[row, :step].tolist()
                    score = float(top_scores[b, c])
                    finished[b].append((score / max(1, len(hyp)) ** o.length_penalty, score, hyp))
            for b in range(streams):
                if not done[b] and (len(finished[b]) >= beam or step >= limits[b]):
                    done[b] = True
            if all(done) or step == steps:
                break
            order = torch.sort(torch.where(live, live_rank, 2 * beam), dim=-1).indices[:, :beam]
            pick_src = src.gather(1, order)
            pick_tok = tokens_next.gather(1, order)
            pick_score = top_scores.gather(1, order)
            parent = (torch.arange(streams, device=dev)[:, None] * beam + pick_src).view(-1)
            new_tok = pick_tok.view(-1)
            scores = pick_score.view(-1)
            seqs = seqs.index_select(0, parent)
            seqs[:, step] = new_tok
            new_is_ts = new_tok >= ts0
            penult_is_ts = last_is_ts.index_select(0, parent)
            last_ts = torch.where(new_is_ts, new_tok, last_ts.index_select(0, parent))
            last_is_ts = new_is_ts
            cache.reorder(parent)
            step_pos = (plen + step - pads).clamp(min=0)[:, None]
            step_mask = valid[:, None, None, :plen + step + 1]
            logits = self.model.decoder(new_tok[:, None], step_pos, cache, cross, step_mask)[:, -1].float()
        out = []
        final_scores = scores.view(streams, beam).tolist()
        for b in range(streams):
            cands = finished[b]
            if not cands:  # nothing ended in time: the live beams as they are
                for j in range(beam):
                    score = final_scores[b][j]
                    if np.isfinite(score):
                        hyp = seqs[b * beam + j, :min(limits[b], steps)].tolist()
                        cands.append((score / max(1, len(hyp)) ** o.length_penalty, score, hyp))
            if not cands:
                out.append(([], 0.0, no_speech[b]))
                continue
            _, raw, hyp = max(cands, key=lambda c: c[0])
            out.append((hyp, raw, no_speech[b]))
        return out

    def _align(self, cross, tokenizers, text_tokens, content) -> list:
        """CTranslate2-style alignments (``alignments``, ``text_token_probs``) of each stream's text tokens."""
        streams = len(text_tokens)
        sot = tokenizers[0].sot_sequence
        seqs = [list(tokenizers[k].sot_sequence) + toks + [tokenizers[k].eot] for k, toks in enumerate(text_tokens)]
        length = max(len(s) for s in seqs)
        tokens = torch.full((streams, length), tokenizers[0].eot, dtype=torch.long)
        for k, s in enumerate(seqs):
            tokens[k, :len(s)] = torch.tensor(s)
        tokens = tokens.to(self.device)
        cache = DecoderCache(self.model.decoder, streams, length, self.dtype, self.device)
        pos = torch.arange(length, device=self.device)
        mask = (pos[None, :] <= pos[:, None])[None, None]
        heads: dict = dict(self.alignment_heads)
        logits = self.model.decoder(tokens, pos[None, :].expand(streams, -1), cache, cross, mask, heads).float()
        weights = heads["weights"]  # [streams, heads, length, frames]
        probs = torch.softmax(logits, dim=-1)
        out = []
        for k, toks in enumerate(text_tokens):
            n = len(toks)
            if not n:
                out.append(SimpleNamespace(alignments=[], text_token_probs=[]))
                continue
            start = len(sot) - 1  # the query that predicts the first text token
            frames = max(1, content[k] // 2)
            w = torch.softmax(weights[k, :, start:start + n + 1, :frames], dim=-1)
            std, mean = torch.std_mean(w, dim=-2, keepdim=True, unbiased=False)
            w = _median_filter((w - mean) / (std + 1e-8), MEDIAN_WIDTH)
            matrix = w.mean(dim=0).cpu().numpy().astype(np.float64)
            text_idx, time_idx = dtw(-matrix)
            p = probs[k, start:start + n].gather(-1, torch.tensor(toks, device=self.device)[:, None])[:, 0]
            out.append(SimpleNamespace(alignments=list(zip(text_idx.tolist(), time_idx.tolist(), strict=True)),
                                       text_token_probs=p.tolist()))
        return out


__all__ = ["TorchWindowDecoder", "WhisperTokens", "dtw", "MAX_FRAMES", "SAMPLING_RATE"]
