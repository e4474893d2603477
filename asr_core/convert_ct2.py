"""Turn a CTranslate2 Whisper model back into an openai-whisper or mlx-whisper model.

voxpipe ships Whisper weights only in CTranslate2 form (``tiny.en`` and
``base`` as pip packages). The torch backend (whisper_timestamped, built on
openai-whisper) and the mlx-whisper backend need the same weights in their own
layouts; this module rewrites them without any download.

How the CTranslate2 names map back (``L`` = layer index)::

    encoder/conv1, encoder/conv2                    encoder.conv1, encoder.conv2
    encoder/position_encodings/encodings            encoder.positional_embedding
    encoder/layer_norm (gamma, beta)                encoder.ln_post (weight, bias)
    decoder/embeddings/weight                       decoder.token_embedding.weight
    decoder/position_encodings/encodings            decoder.positional_embedding
    decoder/layer_norm                              decoder.ln
    {enc,dec}/layer_L/self_attention/linear_0       blocks.L.attn.query|key|value  (rows q, k, v fused)
    {enc,dec}/layer_L/self_attention/linear_1       blocks.L.attn.out
    {enc,dec}/layer_L/self_attention/layer_norm     blocks.L.attn_ln
    decoder/layer_L/attention/linear_0              blocks.L.cross_attn.query
    decoder/layer_L/attention/linear_1              blocks.L.cross_attn.key|value  (rows k, v fused)
    decoder/layer_L/attention/linear_2              blocks.L.cross_attn.out
    decoder/layer_L/attention/layer_norm            blocks.L.cross_attn_ln
    {enc,dec}/layer_L/ffn/linear_0, linear_1        blocks.L.mlp.0, blocks.L.mlp.2
    {enc,dec}/layer_L/ffn/layer_norm                blocks.L.mlp_ln

Whisper's key projections have no bias; CTranslate2 stores a bias slot for
them inside the fused matrix (zeros). Dropping it is exact in any case: a
bias on the keys adds the same value to every attention score of a query,
which softmax ignores. The output projection is tied to the token embedding
in both layouts. mlx-whisper names the MLP layers ``mlp1``/``mlp2`` and keeps
convolution weights as (out, kernel, in); its encoder positions are computed,
not stored.

``model.bin`` layout (CTranslate2 binary version 6, little endian): version
u32, spec name, spec revision u32, variable count u32, then per variable its
name, rank u8, dims u32 each, dtype id u8, byte count u32 and the raw data,
then an alias count u32 and (alias, target) name pairs. Strings are a u16
length (counting a trailing NUL) followed by the bytes.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import struct
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .base import BackendUnavailable, ModelNotFound
from .models import default_cache_dir, resolve_ct2_model

log = logging.getLogger("voxpipe.convert")

# CTranslate2's DataType enum order; bfloat16 (5) is widened by hand.
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}
TARGETS = ("openai", "mlx")


@dataclass
class CT2Model:
    """The variables, aliases and config.json of one CTranslate2 model folder."""

    folder: Path
    spec: str
    revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str] = field(default_factory=dict)
    config: dict = field(default_factory=dict)


def read_ct2_model(folder: str | Path) -> CT2Model:
    """Parse ``folder/model.bin`` (and ``config.json`` when present)."""
    folder = Path(folder)
    path = folder / "model.bin"
    if not path.is_file():
        raise ModelNotFound(f"{folder} has no model.bin (expected a CTranslate2 Whisper model folder)")
    data = memoryview(path.read_bytes())
    pos = 0

    def take(fmt: str):
        nonlocal pos
        values = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize("<" + fmt)
        return values

    def string() -> str:
        nonlocal pos
        (length,) = take("H")
        text = bytes(data[pos : pos + length - 1]).decode("utf-8")
        pos += length
        return text

    (version,) = take("I")
    if version < 5:
        raise ValueError(f"{path}: CTranslate2 binary version {version} is too old to convert (need 5 or newer)")
    spec = string()
    (revision,) = take("I")
    (count,) = take("I")
    variables: dict[str, np.ndarray] = {}
    for _ in range(count):
        name = string()
        (rank,) = take("B")
        shape = take("I" * rank)
        dtype_id, nbytes = take("BI")
        raw = np.frombuffer(data, dtype=np.uint8, count=nbytes, offset=pos)
        pos += nbytes
        variables[name] = _decode(raw, _DTYPES.get(dtype_id), shape, name)
    aliases = {}
    if pos < len(data):
        (n_alias,) = take("I")
        for _ in range(n_alias):
            alias = string()
            aliases[alias] = string()
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    return CT2Model(folder, spec, revision, _dequantize(variables), aliases, config)


def _decode(raw: np.ndarray, dtype, shape: tuple, name: str) -> np.ndarray:
    if dtype is None:
        raise ValueError(f"variable {name!r} has an unknown CTranslate2 dtype")
    if dtype == "bfloat16":
        widened = raw.view(np.uint16).astype(np.uint32) << 16
        return widened.view(np.float32).reshape(shape)
    return raw.view(dtype).reshape(shape)


def _dequantize(variables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Undo int8/int16 weight quantization (``weight`` / ``weight_scale`` per row)."""
    out = dict(variables)
    for name in [n for n in variables if n.endswith("/weight_scale")]:
        base = name[: -len("_scale")]
        scale = variables[name].astype(np.float32)
        weight = variables[base].astype(np.float32)
        out[base] = (weight / scale.reshape(-1, *([1] * (weight.ndim - 1)))).astype(np.float16)
        del out[name]
    return out


def _count_layers(variables: dict, stack: str) -> int:
    pattern = re.compile(rf"^{stack}/layer_(\d+)/")
    found = {int(m.group(1)) for name in variables if (m := pattern.match(name))}
    return max(found) + 1 if found else 0


def whisper_dims(model: CT2Model) -> dict:
    """openai-whisper's ``ModelDimensions`` fields, read off the tensor shapes."""
    v = model.variables
    if model.spec != "WhisperSpec" or "encoder/conv1/weight" not in v:
        raise ValueError(f"{model.folder} holds a {model.spec}, not a CTranslate2 Whisper model")
    n_audio_state, n_mels, _ = v["encoder/conv1/weight"].shape
    n_vocab, n_text_state = v["decoder/embeddings/weight"].shape

    def heads(stack: str, state: int) -> int:
        stored = v.get(f"{stack}/num_heads")
        return int(stored) if stored is not None else state // 64

    return {
        "n_mels": int(n_mels),
        "n_vocab": int(n_vocab),
        "n_audio_ctx": int(v["encoder/position_encodings/encodings"].shape[0]),
        "n_audio_state": int(n_audio_state),
        "n_audio_head": heads("encoder", n_audio_state),
        "n_audio_layer": _count_layers(v, "encoder"),
        "n_text_ctx": int(v["decoder/position_encodings/encodings"].shape[0]),
        "n_text_state": int(n_text_state),
        "n_text_head": heads("decoder", n_text_state),
        "n_text_layer": _count_layers(v, "decoder"),
    }


def openai_state_dict(model: CT2Model) -> dict[str, np.ndarray]:
    """The weights under openai-whisper's parameter names (numpy arrays)."""
    v = model.variables
    used: set[str] = set()
    state: dict[str, np.ndarray] = {}

    def get(name: str) -> np.ndarray:
        used.add(name)
        return v[name]

    def linear(ct2: str, *targets: str) -> None:
        """Copy one (possibly row-fused) linear layer; keys get no bias."""
        weight, bias = get(f"{ct2}/weight"), get(f"{ct2}/bias")
        parts = zip(targets, np.split(weight, len(targets)), np.split(bias, len(targets)), strict=True)
        for part, w, b in parts:
            state[f"{part}.weight"] = w
            if not part.endswith(".key"):
                state[f"{part}.bias"] = b

    def norm(ct2: str, target: str) -> None:
        state[f"{target}.weight"] = get(f"{ct2}/gamma")
        state[f"{target}.bias"] = get(f"{ct2}/beta")

    dims = whisper_dims(model)
    for conv in ("conv1", "conv2"):
        state[f"encoder.{conv}.weight"] = get(f"encoder/{conv}/weight")
        state[f"encoder.{conv}.bias"] = get(f"encoder/{conv}/bias")
    state["encoder.positional_embedding"] = get("encoder/position_encodings/encodings")
    norm("encoder/layer_norm", "encoder.ln_post")
    state["decoder.token_embedding.weight"] = get("decoder/embeddings/weight")
    state["decoder.positional_embedding"] = get("decoder/position_encodings/encodings")
    norm("decoder/layer_norm", "decoder.ln")
    for stack, n_layers in (("encoder", dims["n_audio_layer"]), ("decoder", dims["n_text_layer"])):
        for i in range(n_layers):
            src, dst = f"{stack}/layer_{i}", f"{stack}.blocks.{i}"
            linear(f"{src}/self_attention/linear_0", f"{dst}.attn.query", f"{dst}.attn.key", f"{dst}.attn.value")
            linear(f"{src}/self_attention/linear_1", f"{dst}.attn.out")
            norm(f"{src}/self_attention/layer_norm", f"{dst}.attn_ln")
            if stack == "decoder":
                linear(f"{src}/attention/linear_0", f"{dst}.cross_attn.query")
                linear(f"{src}/attention/linear_1", f"{dst}.cross_attn.key", f"{dst}.cross_attn.value")
                linear(f"{src}/attention/linear_2", f"{dst}.cross_attn.out")
                norm(f"{src}/attention/layer_norm", f"{dst}.cross_attn_ln")
            linear(f"{src}/ffn/linear_0", f"{dst}.mlp.0")
            linear(f"{src}/ffn/linear_1", f"{dst}.mlp.2")
            norm(f"{src}/ffn/layer_norm", f"{dst}.mlp_ln")

    projection = "decoder/projection/weight"
    if projection in v and not np.array_equal(v[projection], v["decoder/embeddings/weight"]):
        raise ValueError("this model has an output projection separate from its token embedding; "
                         "openai-whisper ties the two, so it cannot be converted")
    used.add(projection)
    leftover = sorted(n for n in v if n not in used and v[n].ndim > 0)
    if leftover:
        raise ValueError(f"unexpected CTranslate2 variables, not a plain Whisper model: {', '.join(leftover[:5])}")
    return state


def alignment_heads(model: CT2Model) -> list[list[int]]:
    """The (layer, head) pairs used for word timing, from config.json (may be empty)."""
    return [[int(layer), int(head)] for layer, head in model.config.get("alignment_heads") or []]


def write_openai_checkpoint(model: CT2Model, out_path: str | Path) -> Path:
    """Save an openai-whisper ``.pt`` checkpoint (needs torch).

    Besides openai's ``dims`` and ``model_state_dict`` it holds
    ``alignment_heads`` as a list of (layer, head) pairs; openai-whisper
    ignores that key, voxpipe's whisper_timestamped backend applies it.
    """
    try:
        import torch
    except ImportError as exc:
        raise BackendUnavailable(
            "writing an openai-whisper checkpoint needs torch: pip install 'voxpipe[timestamped]' "
            f"(pip install torch==<a CPU build> first on Linux) [{exc}]"
        ) from exc
    out_path = Path(out_path)
    state = {name: torch.from_numpy(np.array(arr)) for name, arr in openai_state_dict(model).items()}
    checkpoint = {"dims": whisper_dims(model), "model_state_dict": state, "alignment_heads": alignment_heads(model)}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_path.parent, prefix=f".{out_path.name}.")
    os.close(fd)
    try:
        torch.save(checkpoint, tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, out_path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out_path


def mlx_weights(model: CT2Model) -> dict[str, np.ndarray]:
    """The weights under mlx-whisper's names and layouts (numpy arrays)."""
    out = {}
    for name, arr in openai_state_dict(model).items():
        if name == "encoder.positional_embedding":
            continue  # mlx-whisper computes the encoder's sinusoids itself
        if name.startswith("encoder.conv"):
            arr = arr.transpose(0, 2, 1) if arr.ndim == 3 else arr  # (out, in, k) -> (out, k, in)
        out[name.replace(".mlp.0.", ".mlp1.").replace(".mlp.2.", ".mlp2.")] = np.ascontiguousarray(arr)
    heads = alignment_heads(model)
    if heads:
        out["alignment_heads"] = np.asarray(heads, dtype=np.int32)
    return out


def write_mlx_folder(model: CT2Model, out_dir: str | Path) -> Path:
    """Write an mlx-whisper model folder: ``config.json`` + ``weights.npz`` (numpy only)."""
    out_dir = Path(out_dir)
    weights = mlx_weights(model)
    config = {"model_type": "whisper", **whisper_dims(model)}
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        np.savez(tmp / "weights.npz", **weights)
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        if out_dir.exists():
            for name in ("weights.npz", "config.json"):
                os.replace(tmp / name, out_dir / name)
        else:
            os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _umask() -> int:
    """The process umask (temporary files are created private; finished ones are not)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def ct2_source(source: str | Path, cache_dir: str | None = None) -> Path:
    """A CTranslate2 folder, or a bundled model name (``tiny.en``, ``base``) resolved offline."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    resolved = resolve_ct2_model(str(source), None, cache_dir)
    if not resolved.source.startswith("package:"):
        raise ModelNotFound(f"{source!r} is neither a CTranslate2 model folder nor an installed bundled model")
    return Path(resolved.location)


def convert(source: str | Path, to: str, out: str | Path, cache_dir: str | None = None) -> Path:
    """Convert ``source`` (folder or bundled name) to ``to`` (openai | mlx) at ``out``.

    For ``openai``, ``out`` is the ``.pt`` file, or a folder that gets
    ``model.pt``; for ``mlx`` it is the model folder.
    """
    if to not in TARGETS:
        raise ValueError(f"unknown conversion target {to!r}; choose one of {', '.join(TARGETS)}")
    model = read_ct2_model(ct2_source(source, cache_dir))
    out = Path(out).expanduser()
    if to == "openai":
        return write_openai_checkpoint(model, out if out.suffix == ".pt" else out / "model.pt")
    return write_mlx_folder(model, out)


def bundled_converted(name: str | None, to: str, cache_dir: str | None = None) -> Path | None:
    """The bundled CTranslate2 model ``name`` converted to ``to``, made once in the cache.

    Returns None when ``name`` is not a bundled model whose package is
    installed (the caller then falls back to its engine's own download).
    """
    if not name:
        return None
    resolved = resolve_ct2_model(name, None, cache_dir)
    if not resolved.source.startswith("package:"):
        return None
    models = (Path(cache_dir) if cache_dir else default_cache_dir()) / "models"
    target = models / (f"{name}-openai.pt" if to == "openai" else f"{name}-mlx")
    ready = target.is_file() if to == "openai" else (target / "weights.npz").is_file()
    if not ready:
        log.info("converting bundled model %r (%s) for %s into %s", name, resolved.source, to, target)
        convert(resolved.location, to, target)
    return target


def register(sub) -> None:
    p = sub.add_parser(
        "convert-model",
        help="convert a CTranslate2 Whisper model to openai-whisper (.pt) or mlx-whisper form",
        description="Rewrite a CTranslate2 Whisper model (e.g. the bundled tiny.en) for the "
        "whisper_timestamped (--to openai) or mlx-whisper (--to mlx) backend. Nothing is downloaded.",
    )
    p.add_argument("--from-ct2", required=True, metavar="DIR",
                   help="CTranslate2 model folder (model.bin, config.json), or a bundled name: tiny.en, base")
    p.add_argument("--to", required=True, choices=TARGETS, help="openai: a .pt checkpoint; mlx: a model folder")
    p.add_argument("out", metavar="OUT", help="openai: FILE.pt (or a folder that gets model.pt); mlx: a folder")
    p.add_argument("--model-cache-dir", default=None, help="where the bundled 'base' model is assembled")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.set_defaults(func=run)


def run(args) -> int:
    from .base import BackendError

    try:
        path = convert(args.from_ct2, args.to, args.out, args.model_cache_dir)
    except BackendError as exc:
        print(f"voxpipe convert-model: {exc}", file=sys.stderr)
        return 4
    except (ValueError, OSError) as exc:
        print(f"voxpipe convert-model: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0
