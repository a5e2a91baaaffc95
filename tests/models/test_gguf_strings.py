"""Large GGUF string arrays read as one buffer (models/gguf_strings.py): the same strings as the list the parser
made before, and a file whose strings are not UTF-8 (or end inside a character) is still one ModelFormatError."""

from __future__ import annotations

from pathlib import Path

import gguf
import pytest

from athanor.errors import ModelFormatError
from athanor.models.gguf import read_gguf_header
from athanor.models.gguf_strings import LAZY_MIN, StringArray

TOKENS = ["", "a", " b ", "中文", "😀x", "\u2581the", "<0x41>", *[f"tok{i}" for i in range(LAZY_MIN)], "QQ1", "QQ2",
          "QQ3"]


def _write(path: Path, tokens: list[str]) -> Path:
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_array("test.small", ["x", "y"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_large_string_array_reads_as_the_same_strings(tmp_path):
    meta = read_gguf_header(_write(tmp_path / "v.gguf", TOKENS)).metadata
    got = meta["tokenizer.ggml.tokens"]
    assert isinstance(got, StringArray) and got == TOKENS and list(got) == TOKENS and len(got) == len(TOKENS)
    assert got[-1] == "QQ3" and got[3] == "中文" and got[2:5] == TOKENS[2:5] and "😀x" in got
    with pytest.raises(IndexError):
        got[len(TOKENS)]
    assert meta["test.small"] == ["x", "y"]  # a small array stays a list


@pytest.mark.parametrize(("patch", "why"), [
    ({b"QQ1": b"\xff\xfe\xfd"}, "invalid UTF-8"),
    ({b"QQ1": b"x\xe4\xb8", b"QQ2": b"\xadyz"}, "starts inside a character"),  # "x中yz" cut inside "中"
])
def test_strings_that_are_not_utf8_are_one_line_errors(tmp_path, patch, why):
    path = _write(tmp_path / "bad.gguf", TOKENS)
    data = path.read_bytes()
    for old, new in patch.items():
        assert data.count(old) == 1 and len(old) == len(new)
        data = data.replace(old, new)
    path.write_bytes(data)
    with pytest.raises(ModelFormatError, match=f"bad.gguf: GGUF header is truncated or corrupt.*{why}") as exc:
        read_gguf_header(path)
    assert "\n" not in str(exc.value)


def test_a_string_array_past_the_end_is_one_line_error(tmp_path):
    path = _write(tmp_path / "cut.gguf", TOKENS)
    data = path.read_bytes()
    path.write_bytes(data[: data.index(b"tok100")])
    with pytest.raises(ModelFormatError, match="cut.gguf: GGUF header is truncated or corrupt"):
        read_gguf_header(path)
