"""A compact SentencePiece-BPE codec for GGUF vocabularies (`tokenizer.ggml.model = "llama"`: Gemma, Llama 1/2,
Mistral v0.1, TinyLlama): llama.cpp's SPM algorithm (spm.c) over the vocabulary kept as one UTF-8 buffer, offsets,
float32 scores and token types -- ~9 MiB for Gemma 3's 262k tokens where a `tokenizers` BPE took ~72 MiB.

For: `SpmCodec.from_metadata(meta)` (models/gguf_tokenizer.py builds it) and what text/tokenizer.py's `Tokenizer`
asks of it: encode (special tokens matched first, always), decode (skip_special_tokens, byte fallback decoded as
`tokenizers`' ByteFallback decoder does), token <-> id, vocab size, and `to_tokenizers()`, the equivalent
`tokenizers.Tokenizer`, for the rare callers that need that library's object (training, GGUF export).
Not for: byte-level BPE vocabularies (gpt2: `tokenizers` handles them in ~18 MiB), Unigram, HF tokenizer dirs.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np

_SOURCE = Path(__file__).with_name("spm.c")
_SPACE = "\u2581"
_SPACE_UTF8 = _SPACE.encode()
_CONTROL, _UNKNOWN, _USER_DEFINED = 3, 2, 4
_SKIPPED = (_CONTROL, _UNKNOWN)  # what skip_special_tokens drops: the special added tokens of the old backend


@functools.cache
def _lib() -> tuple[ctypes.CDLL | None, str | None]:
    from athanor import cbuild

    lib, reason = cbuild.load(_SOURCE, portable=True)
    if lib is not None:
        p, i32, i64 = ctypes.c_void_p, ctypes.c_int32, ctypes.c_int64
        lib.spm_new.argtypes, lib.spm_new.restype = [p, p, p, p, i32, i32], p
        lib.spm_free.argtypes, lib.spm_free.restype = [p], None
        lib.spm_lookup.argtypes, lib.spm_lookup.restype = [p, ctypes.c_char_p, i64], i32
        lib.spm_encode.argtypes, lib.spm_encode.restype = [p, ctypes.c_char_p, i64, i32, p, i64], i64
    return lib, reason


def available() -> bool:
    """spm.c builds here (a C compiler is found); otherwise GGUF SentencePiece vocabularies use `tokenizers`."""
    return _lib()[0] is not None


def _pack(tokens: Sequence[str]) -> tuple[bytes, np.ndarray]:
    if hasattr(tokens, "blob"):  # models/gguf_strings.py's StringArray: already one buffer
        return tokens.blob, tokens.offsets.astype(np.uint32)
    encoded = [t.encode("utf-8") for t in tokens]
    offsets = np.zeros(len(encoded) + 1, dtype=np.uint32)
    np.cumsum(np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)), out=offsets[1:])
    return b"".join(encoded), offsets


class SpmCodec:
    """The vocabulary as four flat arrays and a C hash table; encode/decode as llama.cpp's SPM tokenizer."""

    def __init__(self, tokens: Sequence[str], scores: Sequence[float] | None, token_types: Sequence[int] | None,
                 unk_id: int | None, add_space_prefix: bool) -> None:
        n = len(tokens)
        blob, offsets = _pack(tokens)
        if len(blob) >= 2**32:
            raise ValueError("the vocabulary's texts exceed 4 GiB")
        scores = np.zeros(n, np.float32) if scores is None else np.asarray(scores, dtype=np.float32)
        types = np.ones(n, np.uint8) if token_types is None else np.asarray(token_types, dtype=np.uint8)
        if scores.shape != (n,) or types.shape != (n,):
            raise ValueError("tokenizer.ggml.scores/token_type do not have one entry per token")
        self.__setstate__({"blob": blob, "offsets": offsets, "scores": scores, "types": types.tobytes(),
                           "unk_id": unk_id if unk_id is not None and 0 <= unk_id < n else None,
                           "add_space_prefix": bool(add_space_prefix)})

    def __getstate__(self) -> dict:  # pickling and deepcopy carry the arrays; the C table is rebuilt
        return {"blob": self._blob, "offsets": self._offsets, "scores": self._scores, "types": self._types_bytes,
                "unk_id": self.unk_id, "add_space_prefix": self.add_space_prefix,
                "tokenizers_builder": self.tokenizers_builder}

    def __setstate__(self, state: dict) -> None:
        lib, reason = _lib()
        if lib is None:
            raise RuntimeError(f"the SentencePiece codec is unavailable: {reason}")
        self._lib, self._tokenizers = lib, None
        self._blob, self._offsets, self._scores = state["blob"], state["offsets"], state["scores"]
        self._types_bytes = state["types"]  # indexing bytes / a memoryview gives Python ints fast (decode)
        self._types, self._offsets_view = np.frombuffer(self._types_bytes, np.uint8), memoryview(self._offsets)
        self.unk_id, self.add_space_prefix = state["unk_id"], state["add_space_prefix"]
        # metadata dict -> the equivalent `tokenizers.Tokenizer` (a module-level function: it pickles by name).
        # Set by the models room, which knows how to build one; text/ does not import it.
        self.tokenizers_builder = state.get("tokenizers_builder")
        self._handle = lib.spm_new(self._blob, self._offsets.ctypes.data, self._scores.ctypes.data,
                                   self._types.ctypes.data, len(self._types), -1 if self.unk_id is None else self.unk_id)
        if not self._handle:
            raise MemoryError("cannot allocate the SentencePiece vocabulary's hash table")

    @classmethod
    def from_metadata(cls, meta: dict) -> SpmCodec:
        """From GGUF `tokenizer.ggml.*` metadata (as parsed by models/gguf.py)."""
        return cls(meta["tokenizer.ggml.tokens"], meta.get("tokenizer.ggml.scores"),
                   meta.get("tokenizer.ggml.token_type"), meta.get("tokenizer.ggml.unknown_token_id"),
                   meta.get("tokenizer.ggml.add_space_prefix", True))

    def __del__(self) -> None:
        handle, self._handle = getattr(self, "_handle", None), None
        if handle:
            self._lib.spm_free(handle)

    def __len__(self) -> int:
        return len(self._types)

    # -- vocabulary

    def _bytes(self, i: int) -> bytes:
        return self._blob[self._offsets_view[i] : self._offsets_view[i + 1]]

    def id_to_token(self, i: int) -> str | None:
        return self._bytes(i).decode("utf-8") if 0 <= i < len(self) else None

    def token_to_id(self, token: str) -> int | None:
        data = token.encode("utf-8", "surrogatepass")
        i = self._lib.spm_lookup(self._handle, data, len(data))
        return None if i < 0 else i

    def token_type(self, i: int) -> int:
        return self._types_bytes[i]

    # -- text <-> ids

    def encode(self, text: str) -> list[int]:
        """Ids of `text`; control, unknown and user-defined tokens written in it are matched first, whole."""
        data = text.encode("utf-8")
        out = np.empty(len(data) + 16, dtype=np.int32)
        for _ in range(2):
            n = self._lib.spm_encode(self._handle, data, len(data), self.add_space_prefix, out.ctypes.data, len(out))
            if n == -2:
                raise ValueError(f"text of {len(data)} bytes is too long to tokenize")
            if n < 0:
                raise MemoryError("out of memory while encoding text")
            if n <= len(out):
                return out[:n].tolist()
            out = np.empty(n, dtype=np.int32)  # more tokens than bytes + 16 (byte fallback of spaces): once more
        raise AssertionError("the encoder's token count changed between two runs")

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """As `tokenizers` decodes the equivalent BPE: "▁" -> " ", runs of <0xXX> tokens joined into UTF-8 (a run
        that is not valid UTF-8 gives one U+FFFD per byte), one leading space dropped with add_space_prefix."""
        blob, offsets, types, n = self._blob, self._offsets_view, self._types_bytes, len(self)
        chunks: list[bytes] = []  # each valid UTF-8 on its own
        run = bytearray()
        for i in ids:
            if not 0 <= i < n or (skip_special_tokens and types[i] in _SKIPPED):
                continue
            piece = blob[offsets[i] : offsets[i + 1]]
            if piece[:3] == b"<0x" and len(piece) == 6 and piece[5] == 62 and _is_hex(piece[3:5]):  # 62: ">"
                run.append(int(piece[3:5], 16))
                continue
            if run:
                chunks.append(_valid_run(run))
                run = bytearray()
            chunks.append(piece.replace(_SPACE_UTF8, b" "))  # before byte fallback, as tokenizers' Replace
        if run:
            chunks.append(_valid_run(run))
        text = b"".join(chunks).decode("utf-8")
        return text[1:] if self.add_space_prefix and text.startswith(" ") else text

    def token_bytes(self) -> list[bytes]:
        """Every token as the bytes it stands for in text (what a grammar engine matches): "▁" -> b" ", <0xXX> ->
        that byte; control, unknown and <...>-looking user-defined tokens as b"\\xff" + their text (llguidance's
        mark for special tokens, as its llama.cpp adapter writes them)."""
        out = []
        for i in range(len(self)):
            piece, kind = self._bytes(i), self._types_bytes[i]
            if kind in _SKIPPED or (kind == _USER_DEFINED and piece[:1] == b"<" and piece[-1:] == b">"):
                out.append(b"\xff" + piece)
            elif piece[:3] == b"<0x" and len(piece) == 6 and piece[5] == 62 and _is_hex(piece[3:5]):
                out.append(bytes([int(piece[3:5], 16)]))
            else:
                out.append(piece.replace(_SPACE_UTF8, b" "))
        return out

    # -- the `tokenizers` equivalent

    def metadata(self) -> dict:
        """The GGUF tokenizer keys this codec was built from (the token lists rebuilt: ~60 MiB for 262k tokens)."""
        n = len(self)
        return {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": [self.id_to_token(i) for i in range(n)],
                "tokenizer.ggml.scores": self._scores.tolist(), "tokenizer.ggml.token_type": self._types.tolist(),
                "tokenizer.ggml.add_space_prefix": self.add_space_prefix,
                **({"tokenizer.ggml.unknown_token_id": self.unk_id} if self.unk_id is not None else {})}

    def to_tokenizers(self):
        """The same vocabulary as a `tokenizers.Tokenizer` (built on first call, then kept: ~72 MiB for Gemma 3)."""
        if self._tokenizers is None:
            if self.tokenizers_builder is None:
                raise RuntimeError("this codec was given no `tokenizers` builder (models/gguf_tokenizer.py sets one)")
            self._tokenizers = self.tokenizers_builder(self.metadata())
        return self._tokenizers


def _is_hex(two: bytes) -> bool:
    return all(c in b"0123456789abcdefABCDEF" for c in two)


def _valid_run(run: bytearray) -> bytes:
    try:
        run.decode("utf-8")
    except UnicodeDecodeError:
        return "\ufffd".encode() * len(run)  # tokenizers' ByteFallback: one replacement per byte of an invalid run
    return bytes(run)
