"""Crafted model files fail with one line before any large allocation (issue 14): nested GGUF arrays, lying
tensor offsets, absurd config.json sizes."""

from __future__ import annotations

import json
import struct

import pytest

from athanor.errors import ModelFormatError
from athanor.models.gguf import read_gguf_header
from athanor.models.hf import hf_config


def _string(s: str) -> bytes:
    raw = s.encode()
    return struct.pack("<Q", len(raw)) + raw


def _gguf(kvs: bytes, n_kv: int, tensors: bytes = b"", n_tensors: int = 0, data: bytes = b"") -> bytes:
    head = b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv) + kvs + tensors
    pad = -len(head) % 32
    return head + b"\0" * pad + data


def test_deeply_nested_metadata_arrays_are_one_line(tmp_path):
    depth = 20000  # Python's recursion limit is 1000: the old reader died with RecursionError
    nested = b"".join(struct.pack("<IQ", 9, 1) for _ in range(depth)) + struct.pack("<IQ", 4, 0)
    path = tmp_path / "nested.gguf"
    path.write_bytes(_gguf(_string("evil.key") + struct.pack("<I", 9) + nested, 1))
    with pytest.raises(ModelFormatError) as e:
        read_gguf_header(path)
    assert "nested" in str(e.value) and "\n" not in str(e.value)


def test_one_level_of_nesting_still_reads(tmp_path):
    inner = struct.pack("<IQ", 4, 2) + struct.pack("<II", 7, 8)
    path = tmp_path / "ok.gguf"
    path.write_bytes(_gguf(_string("k") + struct.pack("<I", 9) + struct.pack("<IQ", 9, 1) + inner, 1))
    assert read_gguf_header(path).metadata["k"] == [[7, 8]]


def test_array_count_past_the_end_is_one_line(tmp_path):
    path = tmp_path / "count.gguf"
    path.write_bytes(_gguf(_string("k") + struct.pack("<I", 9) + struct.pack("<IQ", 0, 2**62), 1))
    with pytest.raises(ModelFormatError, match="truncated or corrupt"):
        read_gguf_header(path)


@pytest.mark.parametrize("offset", [2**40, 2**64 - 64])
def test_lying_tensor_offset_is_one_line(tmp_path, offset):
    tensor = _string("token_embd.weight") + struct.pack("<I", 2) + struct.pack("<QQ", 4, 4) + struct.pack("<IQ", 0, offset)
    path = tmp_path / "lie.gguf"
    path.write_bytes(_gguf(b"", 0, tensor, 1, data=b"\0" * 64))
    with pytest.raises(ModelFormatError) as e:
        read_gguf_header(path)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("alignment", [0, -1, "32"])
def test_bad_alignment_is_one_line(tmp_path, alignment):
    if isinstance(alignment, str):
        kv = _string("general.alignment") + struct.pack("<I", 8) + _string(alignment)
    else:
        kv = _string("general.alignment") + struct.pack("<Ii", 5, alignment)
    path = tmp_path / "align.gguf"
    path.write_bytes(_gguf(kv, 1))
    with pytest.raises(ModelFormatError, match="alignment"):
        read_gguf_header(path)


@pytest.mark.parametrize("layers", [10**9, 1e9, -1, True, "12"])
def test_absurd_config_json_sizes_are_one_line(tmp_path, layers):
    cfg = {"architectures": ["Qwen2ForCausalLM"], "vocab_size": 100, "hidden_size": 16, "intermediate_size": 32,
           "num_hidden_layers": layers, "num_attention_heads": 2, "num_key_value_heads": 1}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFormatError) as e:
        hf_config(tmp_path)
    assert "num_hidden_layers" in str(e.value) and "\n" not in str(e.value)
