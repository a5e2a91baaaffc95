"""Load a GGUF file (llama.cpp's format) into a Checkpoint: ModelConfig, tensors in Hugging Face naming and
layout (float32, or with `keep_blocks` the quantized ones as views of the file's blocks), and a tokenizer rebuilt
from the file's metadata (by gguf_tokenizer.py).

For: GGUF v2/v3 files of the `llama` (Llama 1-3, Mistral, TinyLlama, SmolLM), `qwen2`, `qwen3` and `gemma3`
architectures (ModelConfig from the metadata: gguf_config.py), with the tensor types dequant.py knows.
`inspect_gguf` reads only the header.
Not for: writing GGUF (gguf_export.py), building the tokenizer (gguf_tokenizer.py), running matmuls (nn/),
MoE/vision/other architectures (UnsupportedArchitectureError).

We parse the header ourselves instead of using `gguf.GGUFReader`: the reader builds one numpy array per
vocabulary string and takes ~3 s on a 49k-token vocab, against ~0.1 s here, and we want every failure to
be one ModelFormatError line that names the file.

Llama 3 rope scaling: llama.cpp stores it only as per-frequency factors (tensor `rope_freqs.weight`). We
turn that tensor back into HF's `rope_scaling` dict, assuming low_freq_factor=1 and high_freq_factor=4
(the converter's defaults and every released Llama 3.x), check the dict reproduces the tensor, and drop
the tensor.
"""

from __future__ import annotations

import contextlib
import math
import mmap
import re
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from athanor.errors import ModelFormatError
from athanor.models.checkpoint import Checkpoint
from athanor.models.gguf_config import gguf_config
from athanor.models.gguf_strings import LAZY_MIN, read_string_array

# LLAMA3_SPLIT / QWEN2_SPLIT re-exported for gguf_export.py, which imports them from here
from athanor.models.gguf_tokenizer import LLAMA3_SPLIT as LLAMA3_SPLIT
from athanor.models.gguf_tokenizer import QWEN2_SPLIT as QWEN2_SPLIT
from athanor.models.gguf_tokenizer import build_gguf_tokenizer
from athanor.nn.config import ModelConfig
from athanor.nn.dequant import byte_size, dequantize, type_name

if TYPE_CHECKING:
    from athanor.text.tokenizer import Tokenizer


_PERMUTED_ARCHS = ("llama",)  # convert_hf_to_gguf permutes q/k rows for these (rope pairs adjacent)

# GGUF tensor name <-> HF parameter name (without the .weight/.bias suffix)
GLOBAL_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
LAYER_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
# Gemma 3's four norms per layer (llama.cpp names them after where they sit)
GEMMA3_LAYER_NAMES = {
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}


# ---------------------------------------------------------------- 1. the header


@dataclass
class GGUFTensorInfo:
    name: str
    ggml_type: int
    shape: tuple[int, ...]  # torch order: GGUF lists dims fastest-first, so reversed
    offset: int  # absolute, in bytes from the start of the file
    nbytes: int | None  # None for a type id the gguf package does not know

    @property
    def num_elements(self) -> int:
        return math.prod(self.shape)


@dataclass
class GGUFHeader:
    path: Path
    metadata: dict[str, Any]
    tensors: dict[str, GGUFTensorInfo]


_SCALAR_FORMATS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_ARRAY_DTYPES = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "?",
                 10: "<u8", 11: "<i8", 12: "<f8"}
_STRING, _ARRAY, _FLOAT32 = 8, 9, 6
_MAX_ARRAY_DEPTH = 4


class _Cursor:
    """Reads little-endian GGUF values from a buffer, moving forward."""

    def __init__(self, buf: mmap.mmap) -> None:
        self.buf, self.pos = buf, 0

    def scalar(self, fmt: str) -> Any:
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        n = self.scalar("<Q")
        if self.pos + n > len(self.buf):
            raise ValueError(f"a string of {n} bytes runs past the end of the file")
        raw = self.buf[self.pos : self.pos + n]
        self.pos += n
        return raw.decode("utf-8")

    def value(self, vtype: int, depth: int = 0) -> Any:
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            return self.array(depth)
        if vtype not in _SCALAR_FORMATS:
            raise ValueError(f"unknown metadata value type {vtype}")
        value = self.scalar(_SCALAR_FORMATS[vtype])
        # float32 -> the shortest decimal that round-trips (1e-05, not 9.999999747378752e-06)
        return float(str(np.float32(value))) if vtype == _FLOAT32 else value

    def array(self, depth: int = 0) -> list:
        if depth >= _MAX_ARRAY_DEPTH:  # real files nest at most once; deeper is a crafted file (RecursionError)
            raise ValueError(f"metadata arrays nested more than {_MAX_ARRAY_DEPTH} deep")
        vtype, n = self.scalar("<I"), self.scalar("<Q")
        if n > len(self.buf) - self.pos:  # every element takes at least one byte
            raise ValueError(f"an array of {n} values runs past the end of the file")
        if vtype in _ARRAY_DTYPES:
            values = np.frombuffer(self.buf, dtype=_ARRAY_DTYPES[vtype], count=n, offset=self.pos)
            self.pos += values.nbytes
            return values.tolist()
        if vtype == _STRING and n >= LAZY_MIN:  # a vocabulary: one buffer, not n Python strings
            values, self.pos = read_string_array(self.buf, self.pos, n)
            return values
        if vtype == _STRING:
            return self.strings(n)
        return [self.value(vtype, depth + 1) for _ in range(n)]

    def strings(self, n: int) -> list[str]:
        """n strings in a row: the vocabulary and merges, so the loop is kept tight."""
        buf, pos, unpack, out = self.buf, self.pos, struct.Struct("<Q").unpack_from, []
        for _ in range(n):
            (size,) = unpack(buf, pos)
            out.append(buf[pos + 8 : pos + 8 + size].decode("utf-8"))
            pos += 8 + size
        if pos > len(buf):
            raise ValueError("a string array runs past the end of the file")
        self.pos = pos
        return out


def _tensor_info(cur: _Cursor) -> GGUFTensorInfo:
    name = cur.string()
    n_dims = cur.scalar("<I")
    if n_dims > 4:
        raise ValueError(f"tensor {name!r} has {n_dims} dimensions")
    dims = struct.unpack_from(f"<{n_dims}Q", cur.buf, cur.pos)
    cur.pos += 8 * n_dims
    ggml_type, offset = cur.scalar("<I"), cur.scalar("<Q")
    return GGUFTensorInfo(name, ggml_type, tuple(reversed(dims)), offset, byte_size(ggml_type, math.prod(dims)))


def _parse_header(buf: mmap.mmap, path: Path) -> GGUFHeader:
    cur = _Cursor(buf)
    magic = bytes(buf[:4])
    if magic != b"GGUF":
        raise ModelFormatError(f"{path.name} is not a GGUF file (starts with {magic!r}, expected b'GGUF')")
    cur.pos = 4
    version = cur.scalar("<I")
    if version & 0xFFFF == 0:  # a small version number read with the wrong byte order
        raise ModelFormatError(f"{path.name} is a big-endian GGUF file, which athanor cannot load")
    if version not in (2, 3):
        raise ModelFormatError(f"{path.name}: GGUF version {version} is not supported (need 2 or 3)")
    n_tensors, n_kv = cur.scalar("<Q"), cur.scalar("<Q")
    metadata = {}
    for _ in range(n_kv):
        key = cur.string()
        metadata[key] = cur.value(cur.scalar("<I"))
    infos = [_tensor_info(cur) for _ in range(n_tensors)]
    alignment = metadata.get("general.alignment", 32)
    if isinstance(alignment, bool) or not isinstance(alignment, int) or not 1 <= alignment <= 2**16:
        raise ModelFormatError(f"{path.name}: general.alignment must be an integer in [1, 65536], got {alignment!r}")
    data_start = -(-cur.pos // alignment) * alignment  # round up to the alignment
    for info in infos:
        info.offset += data_start
        if info.nbytes is not None and info.offset + info.nbytes > len(buf):
            raise ModelFormatError(
                f"{path.name}: tensor {info.name!r} runs past the end of the file "
                f"(needs {info.offset + info.nbytes} bytes, file has {len(buf)}); the file is truncated"
            )
    return GGUFHeader(path, metadata, {info.name: info for info in infos})


@contextlib.contextmanager
def _mapped(path: str | Path):
    """The file as a private writable mmap (copy-on-write: torch.frombuffer wants a writable buffer)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFormatError(f"GGUF file not found: {path}" + (" (it is a directory)" if path.is_dir() else ""))
    if path.stat().st_size < 24:
        raise ModelFormatError(f"{path.name} is not a GGUF file ({path.stat().st_size} bytes, too short)")
    try:
        with open(path, "rb") as f:
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    except OSError as e:
        raise ModelFormatError(f"{path.name}: cannot read the file ({e.strerror or e})") from None
    try:
        yield buf
    finally:
        with contextlib.suppress(BufferError):  # a tensor view still alive (e.g. in a traceback)
            buf.close()


def _read(buf: mmap.mmap, path: str | Path) -> GGUFHeader:
    try:
        return _parse_header(buf, Path(path))
    except (struct.error, ValueError, UnicodeDecodeError, OverflowError, MemoryError) as e:
        detail = " ".join(str(e).split()) or type(e).__name__
        raise ModelFormatError(f"{Path(path).name}: GGUF header is truncated or corrupt ({detail})") from None


def read_gguf_header(path: str | Path) -> GGUFHeader:
    """Metadata and tensor table, no tensor data."""
    with _mapped(path) as buf:
        return _read(buf, path)


# ---------------------------------------------------------------- 2. inspect


# general.file_type -> its name as gguf's LlamaFileType spells it (without MOSTLY_/ALL_), for the types llama.cpp
# has written for years: loading a file need not import the `gguf` package (with yaml and sentencepiece, ~4 MiB of a
# served process); other values still ask it
_FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
               12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
               19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL",
               26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16"}


def _quantization(meta: dict, tensors: dict[str, GGUFTensorInfo]) -> str:
    file_type = meta.get("general.file_type")
    if file_type in _FILE_TYPES:
        return _FILE_TYPES[file_type]
    if file_type is not None:
        from gguf import LlamaFileType

        with contextlib.suppress(ValueError):
            return LlamaFileType(file_type).name.removeprefix("MOSTLY_").removeprefix("ALL_")
    matrices = Counter(type_name(t.ggml_type) for t in tensors.values() if len(t.shape) == 2)
    return matrices.most_common(1)[0][0] if matrices else "F32"


def _describe(header: GGUFHeader) -> dict:
    meta, arch = header.metadata, header.metadata.get("general.architecture")
    return {
        "format": "gguf",
        "arch": arch,
        "num_parameters": sum(t.num_elements for t in header.tensors.values()),
        "quantization": _quantization(meta, header.tensors),
        "context_length": meta.get(f"{arch}.context_length"),
        "embedding_length": meta.get(f"{arch}.embedding_length"),
        "license": meta.get("general.license"),
        "chat_template": meta.get("tokenizer.chat_template"),
        "name": meta.get("general.name"),
    }


def inspect_gguf(path: str | Path) -> dict:
    """What `athanor show` prints about a GGUF file, from its header alone."""
    return _describe(read_gguf_header(path))


# ---------------------------------------------------------------- 4. tensors


def hf_name(gguf_name: str, arch: str = "llama") -> str | None:
    """`blk.3.attn_q.weight` -> `model.layers.3.self_attn.q_proj.weight`; None if not a decoder tensor."""
    m = re.fullmatch(r"(?:blk\.(\d+)\.)?(\w+)\.(weight|bias)", gguf_name)
    if m is None:
        return None
    layer, base, kind = m.groups()
    if layer is None:
        return f"{GLOBAL_NAMES[base]}.{kind}" if base in GLOBAL_NAMES else None
    names = LAYER_NAMES | GEMMA3_LAYER_NAMES if arch == "gemma3" else LAYER_NAMES
    return f"model.layers.{layer}.{names[base]}.{kind}" if base in names else None


def permute_qk(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """HF -> llama.cpp row order (convert_hf_to_gguf's LlamaModel.permute): per head, interleave the two
    rotary halves so rope pairs (i, i + d/2) become adjacent rows (2i, 2i + 1).  w: (n_head * d, ...)"""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def unpermute_qk(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Inverse of permute_qk: llama.cpp -> HF row order.  w: (n_head * d, ...)"""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def _load_tensor(buf: mmap.mmap, header: GGUFHeader, info: GGUFTensorInfo) -> torch.Tensor:
    if info.nbytes is None:
        raise ModelFormatError(f"{header.path.name}: tensor {info.name!r} has unknown type id {info.ggml_type}")
    raw = torch.frombuffer(buf, dtype=torch.uint8, count=info.nbytes, offset=info.offset)
    try:
        return dequantize(raw, info.ggml_type, info.shape, info.name)
    except ModelFormatError as e:
        raise ModelFormatError(f"{header.path.name}: {e}") from None


def _block_tensor(block_buf: mmap.mmap, info: GGUFTensorInfo):
    """A matrix kept in its GGUF blocks (nn/gguf_matmul.GGUFWeight, a view of the mapped file), or None when
    its type has no block kernel. The weight holds `block_buf`, a mapping that is never closed: torch.frombuffer
    does not pin it, and closing it under a live view would unmap the weights."""
    from athanor.nn.gguf_matmul import GGUFWeight, supports

    if len(info.shape) != 2 or info.nbytes is None or not supports(info.ggml_type, info.shape[1]):
        return None
    raw = torch.frombuffer(block_buf, dtype=torch.uint8, count=info.nbytes, offset=info.offset)
    w = GGUFWeight(raw, info.ggml_type, *info.shape)
    w.mapping = block_buf  # keeps the mapping alive as long as the weight
    return w


def _block_mapping(path: Path) -> mmap.mmap:
    with open(path, "rb") as f:  # copy-on-write: torch.frombuffer wants a writable buffer; pages stay the file's
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)


def _hf_tensors(buf: mmap.mmap, header: GGUFHeader, config: ModelConfig, keep_blocks: bool) -> dict[str, Any]:
    block_buf = _block_mapping(header.path) if keep_blocks else None
    tensors = {}
    for info in header.tensors.values():
        if info.name == "rope_freqs.weight":  # folded into config.rope_scaling
            continue
        name = hf_name(info.name, config.arch)
        if name is None:
            raise ModelFormatError(f"{header.path.name}: unexpected tensor {info.name!r} for a {config.arch} model")
        w = _block_tensor(block_buf, info) if keep_blocks else None
        w = w if w is not None else _load_tensor(buf, header, info)  # (out_features, in_features) for matrices
        if config.arch in _PERMUTED_ARCHS and (".attn_q." in info.name or ".attn_k." in info.name):
            n_head = config.num_attention_heads if ".attn_q." in info.name else config.num_key_value_heads
            if w.shape[0] != n_head * config.head_dim:
                raise ModelFormatError(f"{header.path.name}: tensor {info.name!r} has shape {list(w.shape)}, "
                                       f"which does not fit {n_head} heads of {config.head_dim}")
            w = unpermute_qk(w, n_head) if isinstance(w, torch.Tensor) else w.with_row_order(
                unpermute_qk(torch.arange(w.shape[0]), n_head))
        if config.arch == "gemma3" and name.endswith("norm.weight"):
            w = w - 1  # llama.cpp's converter stores Gemma's (1 + w); Hugging Face's tensors hold w
        tensors[name] = w
    return tensors


# ---------------------------------------------------------------- 5. load

_SAMPLING_KEYS = {"temp": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p",
                  "penalty_repeat": "repetition_penalty"}


def _generation_defaults(meta: dict) -> dict:
    defaults = {"eos_token_id": meta.get("tokenizer.ggml.eos_token_id")}
    for key, name in _SAMPLING_KEYS.items():
        if f"general.sampling.{key}" in meta:
            defaults[name] = meta[f"general.sampling.{key}"]
    return defaults


_VOCAB_KEYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type", "tokenizer.ggml.merges")


def _tokenizer(header: GGUFHeader) -> Tokenizer:
    from athanor.text.tokenizer import Tokenizer

    try:
        backend, kwargs = build_gguf_tokenizer(header.metadata)
        return Tokenizer(backend, **kwargs)
    except ModelFormatError as e:
        raise ModelFormatError(f"{header.path.name}: {e}") from None
    except Exception as e:  # noqa: BLE001 -- tokenizers raises bare Exception (e.g. a merge of unknown tokens)
        raise ModelFormatError(f"{header.path.name}: cannot build the tokenizer ({' '.join(str(e).split())})") from None


def load_gguf(path: str | Path, keep_blocks: bool = False) -> Checkpoint:
    """Read a GGUF file into a Checkpoint (dequantized float32 tensors, HF names and layout).

    keep_blocks: matrices whose type has a block kernel (nn/gguf_matmul.py: Q4_0, Q5_0, Q8_0, Q4_K, Q5_K, Q6_K,
    IQ4_NL, IQ4_XS) or that nn/quant.py re-packs exactly (Q4_1) stay as GGUFWeight views of the mapped file instead of
    float32 (build_model runs them natively, re-packs them or dequantizes them); the rest is float32 as
    without it."""
    with _mapped(path) as buf:
        header = _read(buf, path)
        rope_info = header.tensors.get("rope_freqs.weight")
        rope_freqs = _load_tensor(buf, header, rope_info) if rope_info is not None else None
        config = gguf_config(header, rope_freqs)
        tokenizer = _tokenizer(header)  # before the slow part, so a bad vocabulary fails fast
        for key in _VOCAB_KEYS:  # built: the lists (262k strings for Gemma 3) are freed before the weights load
            header.metadata.pop(key, None)
        tensors = _hf_tensors(buf, header, config, keep_blocks)
    info = {**_describe(header), "path": str(header.path)}
    return Checkpoint(config, tensors, tokenizer, _generation_defaults(header.metadata), info)
