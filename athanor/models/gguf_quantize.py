"""Quantize float weights into GGUF block types, and choose each tensor's type for a llama.cpp file type.

For `athanor quantize` / `athanor export` (through gguf_export.write_gguf): Q4_K, Q5_K, Q6_K by our C port of
llama.cpp's reference quantizers (gguf_quantize.c), Q8_0/Q4_0/Q4_1/Q5_0 by the `gguf` package's (llama.cpp's
numpy reference, byte for byte). With an importance vector (one value per input column, from an imatrix file:
models/imatrix_file.py), Q4_0/Q5_0/Q4_K/Q5_K/Q6_K use llama.cpp's importance-weighted quantizers (the C port
of quantize_row_*_impl with quant_weights); Q8_0 and Q4_1 ignore it (as llama.cpp's Q8_0 does). `tensor_type` mirrors llama.cpp's choices for the
mixes: Q4_K_M and Q5_K_M put attn_v and ffn_down of the first and last eighth of the layers and every
third layer between in Q6_K, the output matrix (or a tied embedding) in Q6_K; matrices whose rows do not
split into 256-weight super-blocks fall back to Q5_0 (for Q4_K and Q5_K; llama.cpp takes Q5_1 for Q5_K,
which athanor has no kernel for) or Q8_0 (for Q6_K). IQ4_NL / IQ4_XS (iq4_quantize.py, llama.cpp's non-linear 4-bit
types) follow llama-quantize's mix for those file types: Q5_K for attn_v where 4+ query heads share a KV head and
for ffn_down of the first eighth of the layers without an importance matrix, Q6_K for the output; IQ4_XS falls back
to IQ4_NL for rows that do not split into 256.
Not for: computing importance matrices (imatrix_collect.py), other IQ types, or reading files (gguf.py, dequant.py).
"""

from __future__ import annotations

import ctypes
import functools
import re
from pathlib import Path

import numpy as np
import torch

from athanor.errors import AthanorError

FILE_TYPES = ("Q8_0", "Q4_0", "Q5_0", "Q4_K_M", "Q5_K_M", "Q6_K", "IQ4_NL", "IQ4_XS")  # `athanor quantize --type`
_K_IDS = {"Q4_K": 12, "Q5_K": 13, "Q6_K": 14}
_K_BYTES = {"Q4_K": 144, "Q5_K": 176, "Q6_K": 210}
_FALLBACK = {"Q4_K": "Q5_0", "Q5_K": "Q5_0", "Q6_K": "Q8_0", "IQ4_XS": "IQ4_NL"}
_WEIGHTED_IDS = {"Q4_0": 2, "Q5_0": 6, **_K_IDS}  # types whose quantizer takes an importance vector
_BLOCK = {"Q4_0": (32, 18), "Q5_0": (32, 22), "Q4_K": (256, 144), "Q5_K": (256, 176), "Q6_K": (256, 210)}


@functools.cache
def _lib() -> ctypes.CDLL:
    from athanor import cbuild

    source = Path(__file__).with_name("gguf_quantize.c")
    lib, reason = cbuild.load(source)
    if lib is None:
        lib, reason2 = cbuild.load(source, portable=True)
        if lib is None:
            raise AthanorError(f"cannot build the K-quant quantizer: {reason2 or reason}")
    lib.athk_quantize.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_long, ctypes.c_void_p]
    lib.athk_quantize.restype = ctypes.c_int
    lib.athk_quantize_weighted.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_long, ctypes.c_long,
                                           ctypes.c_void_p, ctypes.c_void_p]
    lib.athk_quantize_weighted.restype = ctypes.c_int
    return lib


def _quantize_weighted(x: np.ndarray, type_name: str, importance: np.ndarray) -> np.ndarray:
    rows, K = x.shape
    block, nbytes = _BLOCK[type_name]
    if K % block:
        raise ValueError(f"{type_name} needs rows of a multiple of {block} weights, got {K}")
    qw = np.ascontiguousarray(importance, dtype=np.float32).reshape(-1)
    if qw.size != K:
        raise AthanorError(f"importance matrix has {qw.size} columns for a matrix with {K}: not this model's")
    out = np.empty((rows, K // block * nbytes), dtype=np.uint8)
    status = _lib().athk_quantize_weighted(_WEIGHTED_IDS[type_name], x.ctypes.data, rows, K, qw.ctypes.data,
                                           out.ctypes.data)
    assert status == 0
    return out


def quantize(w: torch.Tensor | np.ndarray, type_name: str, importance: np.ndarray | None = None) -> np.ndarray:
    """(rows, K) float weights -> (rows, K / block * block_bytes) uint8 GGUF blocks of `type_name`.
    importance: K per-column weights (an imatrix entry) for the types that use one, else ignored."""
    import gguf

    x = np.ascontiguousarray(w.detach().float().numpy() if isinstance(w, torch.Tensor) else w, dtype=np.float32)
    if type_name in ("IQ4_NL", "IQ4_XS"):
        from athanor.models import iq4_quantize

        fn = iq4_quantize.quantize_iq4_nl if type_name == "IQ4_NL" else iq4_quantize.quantize_iq4_xs
        return fn(x, importance)
    if importance is not None and type_name in _WEIGHTED_IDS:
        return _quantize_weighted(x, type_name, importance)
    if type_name not in _K_IDS:
        return gguf.quants.quantize(x, gguf.GGMLQuantizationType[type_name])
    rows, K = x.shape
    if K % 256:
        raise ValueError(f"{type_name} needs rows of a multiple of 256 weights, got {K}")
    out = np.empty((rows, K // 256 * _K_BYTES[type_name]), dtype=np.uint8)
    status = _lib().athk_quantize(_K_IDS[type_name], x.ctypes.data, x.size, out.ctypes.data)
    assert status == 0
    return out


def _use_more_bits(i: int, n: int) -> bool:
    """llama.cpp's layers that get more bits in the _M mixes: first and last eighth, every third between."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def tensor_type(gguf_name: str, shape: tuple[int, ...], file_type: str, num_layers: int, tied: bool, *,
                gqa: int = 1, imatrix: bool = False) -> str:
    """The GGUF type of one tensor (llama.cpp name, torch shape) in a file of `file_type`. gqa: query heads per KV
    head; imatrix: the weights are quantized with an importance matrix (both only matter to the IQ4 mixes)."""
    if len(shape) < 2:
        return "F32"  # norms and biases, as llama.cpp
    if shape[-1] % 32:
        return "F16"
    base = {"Q4_K_M": "Q4_K", "Q5_K_M": "Q5_K"}.get(file_type, file_type)
    chosen = base
    layer = re.match(r"blk\.(\d+)\.", gguf_name)
    if gguf_name == "output.weight" or (tied and gguf_name == "token_embd.weight"):
        chosen = "Q8_0" if file_type == "Q8_0" else "Q6_K"
    elif file_type in ("Q4_K_M", "Q5_K_M") and layer and (".attn_v." in gguf_name or ".ffn_down." in gguf_name):
        chosen = "Q6_K" if _use_more_bits(int(layer.group(1)), num_layers) else base
    elif file_type in ("IQ4_NL", "IQ4_XS") and layer and ".attn_v." in gguf_name and gqa >= 4:
        chosen = "Q5_K"
    elif file_type in ("IQ4_NL", "IQ4_XS") and layer and ".ffn_down." in gguf_name and not imatrix:
        chosen = "Q5_K" if int(layer.group(1)) < num_layers // 8 else base
    if chosen in _FALLBACK and shape[-1] % 256:
        chosen = _FALLBACK[chosen]
    return chosen
