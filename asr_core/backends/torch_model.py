"""Whisper's encoder and decoder in PyTorch, shaped for batched decoding of many streams.

Used by the ``torch-whisper`` backend (:mod:`.torch_whisper`). The layers are Whisper's
(pre-norm transformer blocks, a two-convolution audio stem, a decoder whose output
projection is its token embedding); the parameter names are openai-whisper's, so
:func:`asr_core.convert_ct2.openai_state_dict` fills them. What is particular here:

* the decoder keeps its self-attention keys and values in preallocated buffers (one row
  per beam of each stream), reordered in place when the beam search picks its survivors;
* cross-attention keys and values are computed once per stream, not per beam: the beams
  of a stream are folded into the query axis, so they share them without a copy;
* prompts of different lengths run in one batch, left-padded: each row has its own
  positions, and padded keys are masked, so a stream's decode does not depend on the
  others' prompts;
* :func:`log_mel` computes Whisper's log-mel features on the model's device.

Weights load from a *prepared folder* (:func:`save_prepared`: every matrix int8 with one
float16 scale per row, everything else float16, plus ``config.json``, ``tokenizer.json``
and the mel filters: small enough to copy to a GPU machine without CTranslate2) or
straight from a CTranslate2 model folder.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SAMPLING_RATE = 16000
N_FFT = 400
HOP = 160
PREPARED_FILES = ("weights.npz", "config.json", "tokenizer.json", "mel_filters.npy")


class Attention(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(d, d)
        self.key = nn.Linear(d, d, bias=False)
        self.value = nn.Linear(d, d)
        self.out = nn.Linear(d, d)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        return x.view(b, t, self.heads, d // self.heads).transpose(1, 2)

    def merge(self, x: torch.Tensor) -> torch.Tensor:
        b, h, t, dh = x.shape
        return self.out(x.transpose(1, 2).reshape(b, t, h * dh))


class Block(nn.Module):
    def __init__(self, d: int, heads: int, cross: bool):
        super().__init__()
        self.attn = Attention(d, heads)
        self.attn_ln = nn.LayerNorm(d)
        self.cross_attn = Attention(d, heads) if cross else None
        self.cross_attn_ln = nn.LayerNorm(d) if cross else None
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.mlp_ln = nn.LayerNorm(d)


class Encoder(nn.Module):
    def __init__(self, n_mels: int, ctx: int, d: int, heads: int, layers: int):
        super().__init__()
        self.conv1 = nn.Conv1d(n_mels, d, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(d, d, kernel_size=3, stride=2, padding=1)
        self.register_buffer("positional_embedding", torch.zeros(ctx, d))
        self.blocks = nn.ModuleList(Block(d, heads, cross=False) for _ in range(layers))
        self.ln_post = nn.LayerNorm(d)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """``[batch, n_mels, frames]`` -> ``[batch, frames // 2, d]`` (frames even, at most 3000)."""
        x = F.gelu(self.conv1(mel))
        x = F.gelu(self.conv2(x)).transpose(1, 2)
        x = x + self.positional_embedding[: x.shape[1]]
        for b in self.blocks:
            h = b.attn_ln(x)
            a = b.attn
            x = x + a.merge(F.scaled_dot_product_attention(a.split(a.query(h)), a.split(a.key(h)), a.split(a.value(h))))
            x = x + b.mlp(b.mlp_ln(x))
        return self.ln_post(x)


class Decoder(nn.Module):
    def __init__(self, vocab: int, ctx: int, d: int, heads: int, layers: int):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab, d)
        self.positional_embedding = nn.Parameter(torch.zeros(ctx, d))
        self.blocks = nn.ModuleList(Block(d, heads, cross=True) for _ in range(layers))
        self.ln = nn.LayerNorm(d)

    def cross_kv(self, enc: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each layer's cross-attention keys and values of the encoder output (one row per stream)."""
        out = []
        for b in self.blocks:
            a = b.cross_attn
            out.append((a.split(a.key(enc)), a.split(a.value(enc))))
        return out

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor, cache: DecoderCache, cross: list,
                attn_mask: torch.Tensor | None, alignment_heads: dict | None = None) -> torch.Tensor:
        """Logits of ``tokens`` (``[rows, L]``, rows = streams x beams, stream-major) at ``positions``.

        Their keys and values are written into ``cache`` after its ``cache.length`` first
        ones; ``attn_mask`` (``[rows, 1, L, length + L]``, True = attend) masks the padding
        and the future. With ``alignment_heads`` (layer -> heads), the cross-attention
        scores of those heads (scaled, before the softmax) go into that dict under ``"weights"``.
        """
        x = self.token_embedding(tokens) + self.positional_embedding[positions]
        start, end = cache.length, cache.length + tokens.shape[1]
        streams = cross[0][0].shape[0] if cross else 0
        collected = []
        for i, b in enumerate(self.blocks):
            a = b.attn
            h = b.attn_ln(x)
            k_buf, v_buf = cache.keys[i], cache.values[i]
            k_buf[:, :, start:end] = a.split(a.key(h))
            v_buf[:, :, start:end] = a.split(a.value(h))
            q = a.split(a.query(h))
            x = x + a.merge(F.scaled_dot_product_attention(q, k_buf[:, :, :end], v_buf[:, :, :end],
                                                           attn_mask=attn_mask))
            c = b.cross_attn
            h = b.cross_attn_ln(x)
            q = c.split(c.query(h))  # [rows, H, L, dh]
            rows, heads, length, dh = q.shape
            beams = rows // streams
            # a stream's beams share its keys and values: fold them into the query axis
            qf = q.view(streams, beams, heads, length, dh).transpose(1, 2).reshape(streams, heads, beams * length, dh)
            ck, cv = cross[i]
            if alignment_heads is not None and i in alignment_heads:  # scaled scores, before the softmax
                collected.append(((qf @ ck.transpose(-1, -2)).float() / math.sqrt(dh))[:, alignment_heads[i]])
            o = F.scaled_dot_product_attention(qf, ck, cv)
            o = o.view(streams, heads, beams, length, dh).transpose(1, 2).reshape(rows, heads, length, dh)
            x = x + c.merge(o)
            x = x + b.mlp(b.mlp_ln(x))
        cache.length = end
        if alignment_heads is not None:
            alignment_heads["weights"] = torch.cat(collected, dim=1) if collected else None
        return self.ln(x) @ self.token_embedding.weight.T


class DecoderCache:
    """Self-attention keys and values of every layer, ``[rows, heads, max_length, dh]``, filled up to ``length``."""

    def __init__(self, decoder: Decoder, rows: int, max_length: int, dtype, device):
        d = decoder.token_embedding.weight.shape[1]
        heads = decoder.blocks[0].attn.heads
        shape = (rows, heads, max_length, d // heads)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in decoder.blocks]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in decoder.blocks]
        self.length = 0

    def reorder(self, rows: torch.Tensor) -> None:
        """Row ``r`` of the cache becomes what row ``rows[r]`` was (the beams that survive a step)."""
        for buf in (*self.keys, *self.values):
            buf[:, :, : self.length] = buf.index_select(0, rows)[:, :, : self.length]


class Whisper(nn.Module):
    def __init__(self, dims: dict):
        super().__init__()
        self.dims = dims
        self.encoder = Encoder(dims["n_mels"], dims["n_audio_ctx"], dims["n_audio_state"], dims["n_audio_head"],
                               dims["n_audio_layer"])
        self.decoder = Decoder(dims["n_vocab"], dims["n_text_ctx"], dims["n_text_state"], dims["n_text_head"],
                               dims["n_text_layer"])


# -- features ------------------------------------------------------------------------------------------------
def log_mel(audio: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
    """Whisper's log-mel features of ``[batch, samples]`` audio: ``[batch, n_mels, samples // 160]``."""
    window = torch.hann_window(N_FFT, device=audio.device)
    stft = torch.stft(audio.float(), N_FFT, HOP, window=window, return_complex=True, center=True, pad_mode="reflect")
    power = stft[..., :-1].abs() ** 2
    mel = filters.float() @ power
    log = torch.clamp(mel, min=1e-10).log10()
    log = torch.maximum(log, log.amax(dim=(-2, -1), keepdim=True) - 8.0)
    return (log + 4.0) / 4.0


# -- weights -------------------------------------------------------------------------------------------------
def quantize(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Matrices as int8 with a float16 scale per row (``NAME`` + ``NAME.scale``), the rest float16."""
    out = {}
    for name, arr in state.items():
        arr = np.asarray(arr, dtype=np.float32)
        if arr.ndim >= 2 and "positional_embedding" not in name:
            rows = arr.reshape(arr.shape[0], -1)
            scale = np.maximum(np.abs(rows).max(axis=1), 1e-8) / 127.0
            out[name] = np.clip(np.round(rows / scale[:, None]), -127, 127).astype(np.int8).reshape(arr.shape)
            out[name + ".scale"] = scale.astype(np.float16)
        else:
            out[name] = arr.astype(np.float16)
    return out


def dequantize(stored) -> dict[str, np.ndarray]:
    out = {}
    for name in stored.files if hasattr(stored, "files") else stored:
        if name.endswith(".scale"):
            continue
        arr = stored[name]
        scale_name = name + ".scale"
        if arr.dtype == np.int8:
            scale = stored[scale_name].astype(np.float32)
            arr = arr.astype(np.float32) * scale.reshape(-1, *([1] * (arr.ndim - 1)))
        out[name] = arr.astype(np.float32)
    return out


def save_prepared(ct2_folder: str | Path, out: str | Path) -> Path:
    """A prepared folder from a CTranslate2 Whisper folder (about half the size of its float16 ``model.bin``)."""
    import shutil

    from faster_whisper.feature_extractor import FeatureExtractor

    from ..convert_ct2 import alignment_heads, openai_state_dict, read_ct2_model, whisper_dims

    model = read_ct2_model(ct2_folder)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "weights.npz", **quantize(openai_state_dict(model)))
    config = {"dims": whisper_dims(model), "alignment_heads": alignment_heads(model),
              "suppress_ids": model.config.get("suppress_ids", []),
              "suppress_ids_begin": model.config.get("suppress_ids_begin", []),
              "lang_ids": model.config.get("lang_ids", [])}
    (out / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    shutil.copyfile(Path(ct2_folder) / "tokenizer.json", out / "tokenizer.json")
    np.save(out / "mel_filters.npy", FeatureExtractor(feature_size=config["dims"]["n_mels"]).mel_filters)
    return out


def load_model(folder: str | Path, device: str, dtype) -> tuple[Whisper, dict, torch.Tensor]:
    """(model, config, mel filters) from a prepared folder or a CTranslate2 folder, on ``device`` in ``dtype``."""
    folder = Path(folder)
    if (folder / "weights.npz").is_file():
        config = json.loads((folder / "config.json").read_text())
        with np.load(folder / "weights.npz") as stored:
            state = dequantize(stored)
        filters = np.load(folder / "mel_filters.npy")
    else:
        from faster_whisper.feature_extractor import FeatureExtractor

        from ..convert_ct2 import alignment_heads, openai_state_dict, read_ct2_model, whisper_dims

        model = read_ct2_model(folder)
        config = {"dims": whisper_dims(model), "alignment_heads": alignment_heads(model),
                  "suppress_ids": model.config.get("suppress_ids", []),
                  "suppress_ids_begin": model.config.get("suppress_ids_begin", []),
                  "lang_ids": model.config.get("lang_ids", [])}
        state = {k: np.asarray(v, dtype=np.float32) for k, v in openai_state_dict(model).items()}
        filters = FeatureExtractor(feature_size=config["dims"]["n_mels"]).mel_filters
    whisper = Whisper(config["dims"])
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}
    missing, unexpected = whisper.load_state_dict(tensors, strict=False)
    if [m for m in missing if not m.endswith("key.bias")] or unexpected:
        raise ValueError(f"weights do not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    whisper = whisper.to(device=device, dtype=dtype).eval()
    return whisper, config, torch.from_numpy(np.asarray(filters, dtype=np.float32)).to(device)
