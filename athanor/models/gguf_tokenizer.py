"""Rebuild a tokenizer from GGUF tokenizer metadata (`tokenizer.ggml.*` keys).

For: `build_gguf_tokenizer(meta)`, which gguf.py calls while loading a file: byte-level BPE (`gpt2`: Llama 3,
Qwen2/3, SmolLM) with the pre-tokenizer split chosen by `tokenizer.ggml.pre`; SentencePiece BPE (`llama`:
Gemma, Llama 1/2, TinyLlama, Mistral v0.1) as text/spm.py's compact codec, or (`build_tokenizers_backend`, which
the codec also uses when a caller asks for a `tokenizers` object) as a BPE with byte fallback and merges
recovered from token scores; the control/user-defined tokens as added tokens. Also the split regexes
gguf_export.py writes back as names.
Not for: reading the file (gguf.py parses the header and wraps our errors with the file name), Unigram or
WordPiece vocabularies (ModelFormatError), or HF tokenizer directories (athanor/text/tokenizer.py).
"""

from __future__ import annotations

import logging
from array import array
from typing import TYPE_CHECKING

from athanor.errors import ModelFormatError

if TYPE_CHECKING:
    import tokenizers

    from athanor.text.spm import SpmCodec

log = logging.getLogger(__name__)

LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_SPLIT = LLAMA3_SPLIT.replace(r"\p{N}{1,3}", r"\p{N}")  # Qwen splits digits one by one
# tokenizer.ggml.pre -> split regex run before ByteLevel (names as llama.cpp's convert_hf_to_gguf writes them)
_PRE_SPLITS = {
    "llama-bpe": LLAMA3_SPLIT, "llama3": LLAMA3_SPLIT, "llama-v3": LLAMA3_SPLIT, "smaug-bpe": LLAMA3_SPLIT,
    "qwen2": QWEN2_SPLIT, "deepseek-r1-qwen": QWEN2_SPLIT,
}
_CONTROL, _USER_DEFINED, _UNKNOWN = 3, 4, 2  # tokenizer.ggml.token_type values
_CHUNK = 65536  # merges turned into string pairs per slice


def _pre_tokenizer(pre: str | None):
    from tokenizers import Regex, pre_tokenizers

    if pre == "smollm":  # SmolLM's tokenizer.json: digits one by one, then GPT-2's split
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    if pre in _PRE_SPLITS:
        return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(_PRE_SPLITS[pre]), behavior="isolated"),
                                        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    if pre not in (None, "default", "gpt-2", "gpt2"):
        log.warning("GGUF pre-tokenizer %r is unknown to athanor; using GPT-2's split", pre)
    return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)


def _byte_level_bpe(meta: dict) -> tokenizers.Tokenizer:
    from tokenizers import Tokenizer, decoders, models, normalizers

    vocab = _vocab(meta["tokenizer.ggml.tokens"])
    merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges", [])]
    pre = meta.get("tokenizer.ggml.pre")
    # Llama 3's tokenizer.json (and llama.cpp for llama-bpe) takes a whole word that is in the vocab as is
    tok = Tokenizer(models.BPE(vocab, merges, ignore_merges=_PRE_SPLITS.get(pre) is LLAMA3_SPLIT))
    tok.pre_tokenizer = _pre_tokenizer(pre)
    if pre in ("qwen2", "deepseek-r1-qwen"):
        tok.normalizer = normalizers.NFC()  # as Qwen2's tokenizer.json
    tok.decoder = decoders.ByteLevel()
    return tok


def _sentencepiece_merges(tokens: list[str], scores: list[float], vocab: dict[str, int]) -> list[tuple[str, str]]:
    """Merges implied by a SentencePiece vocab: every split of a token into two vocab pieces, best token
    score first (ties: longer left piece, then longer right piece, then token order, then the pieces' ids) --
    as transformers' GGUF converter. Candidates are kept as numbers (a 262k vocab implies ~500k merges: as
    Python tuples they took ~150 MB at load) and the pairs reuse the vocab's own strings."""
    import numpy as np

    left_ids, right_ids, score_of, order = array("q"), array("q"), array("d"), array("q")
    for t, (token, score) in enumerate(zip(tokens, scores, strict=False)):
        for i in range(1, len(token)):
            left, right = vocab.get(token[:i]), vocab.get(token[i:])
            if left is not None and right is not None:
                left_ids.append(left), right_ids.append(right), score_of.append(score), order.append(t)
    lefts, rights = np.frombuffer(left_ids, dtype=np.int64), np.frombuffer(right_ids, dtype=np.int64)
    lengths = np.array([len(t) for t in tokens], dtype=np.int64)
    # np.lexsort: the last key is the primary one; all ascending, so the "best first" keys are negated
    ranked = np.lexsort((rights, lefts, np.frombuffer(order, dtype=np.int64), -lengths[rights], -lengths[lefts],
                         -np.frombuffer(score_of, dtype=np.float64)))
    del score_of, order  # (left_ids and right_ids live on under lefts and rights)
    merges: list[tuple[str, str]] = []
    for start in range(0, len(ranked), _CHUNK):  # in slices: two lists of 500k Python ints at once took ~40 MB
        part = ranked[start : start + _CHUNK]
        merges += zip(map(tokens.__getitem__, lefts[part].tolist()), map(tokens.__getitem__, rights[part].tolist()))
    return merges


def _sentencepiece_bpe(meta: dict) -> tokenizers.Tokenizer:
    """SentencePiece BPE (Llama 1/2, TinyLlama, Mistral v0.1) as a `tokenizers` BPE with byte fallback.

    Spaces become "▁" and one "▁" is prepended to every piece of text between special tokens, as both
    sentencepiece and llama.cpp do (a Metaspace pre-tokenizer would not prepend to text starting with a space).
    """
    from tokenizers import Tokenizer, decoders, models, normalizers

    tokens = meta["tokenizer.ggml.tokens"]
    vocab = _vocab(tokens)
    if "tokenizer.ggml.merges" in meta:
        merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
    else:
        merges = _sentencepiece_merges(tokens, meta.get("tokenizer.ggml.scores") or [0.0] * len(tokens), vocab)
    unk_id = meta.get("tokenizer.ggml.unknown_token_id")
    unk = tokens[unk_id] if unk_id is not None and unk_id < len(tokens) else None
    tok = Tokenizer(models.BPE(vocab, merges, unk_token=unk, fuse_unk=True, byte_fallback=True))
    prefix = meta.get("tokenizer.ggml.add_space_prefix", True)
    steps = [normalizers.Prepend("▁")] if prefix else []
    tok.normalizer = normalizers.Sequence([*steps, normalizers.Replace(" ", "▁")])
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    tok.decoder = decoders.Sequence(steps + ([decoders.Strip(content=" ", left=1)] if prefix else []))
    return tok


def _vocab(tokens: list[str]) -> dict[str, int]:
    vocab: dict[str, int] = {}
    for i, token in enumerate(tokens):
        vocab.setdefault(token, i)  # a duplicated token keeps its first id
    return vocab


def _add_special_tokens(tok: tokenizers.Tokenizer, meta: dict) -> None:
    """Control tokens (`<|im_start|>`) become special added tokens, user-defined ones (`<think>`) plain added
    tokens: both are then matched whole in text instead of being cut into BPE pieces."""
    from tokenizers import AddedToken

    pairs = list(zip(meta["tokenizer.ggml.tokens"], meta.get("tokenizer.ggml.token_type") or [], strict=False))
    special = [AddedToken(t, special=True, normalized=False) for t, k in pairs if k in (_CONTROL, _UNKNOWN)]
    user = [AddedToken(t, special=False, normalized=False) for t, k in pairs if k == _USER_DEFINED]
    tok.add_special_tokens(special)
    tok.add_tokens(user)


def build_tokenizers_backend(meta: dict) -> tokenizers.Tokenizer:
    """The vocabulary as a `tokenizers.Tokenizer` (BPE, special and user-defined tokens added)."""
    kind, tokens = meta.get("tokenizer.ggml.model"), meta.get("tokenizer.ggml.tokens")
    if not tokens:
        raise ModelFormatError("the GGUF file has no tokenizer vocabulary (tokenizer.ggml.tokens)")
    if kind == "gpt2":
        backend = _byte_level_bpe(meta)
    elif kind == "llama":
        backend = _sentencepiece_bpe(meta)
    else:
        raise ModelFormatError(f"GGUF tokenizer model {kind!r} is not supported; supported: gpt2, llama")
    _add_special_tokens(backend, meta)
    return backend


def _uses_compact(meta: dict, compact: bool) -> bool:
    from athanor.text import spm

    if meta.get("tokenizer.ggml.model") != "llama" or "tokenizer.ggml.merges" in meta or not compact:
        return False  # (an SPM file with explicit merges is tokenized by them: only `tokenizers` does that)
    return spm.available()


def build_gguf_tokenizer(meta: dict, compact: bool = True) -> tuple[tokenizers.Tokenizer | SpmCodec, dict]:
    """(backend, keyword arguments for athanor's Tokenizer) from GGUF tokenizer metadata. A SentencePiece
    vocabulary (`llama`) gets the compact codec of text/spm.py when spm.c builds here (it gives the same ids as
    the `tokenizers` BPE, in ~10 MiB instead of ~72 for Gemma 3's 262k tokens; compact=False: the BPE, which
    the tests compare it with), the rest a `tokenizers.Tokenizer`."""
    kind, tokens = meta.get("tokenizer.ggml.model"), meta.get("tokenizer.ggml.tokens")
    if not tokens:
        raise ModelFormatError("the GGUF file has no tokenizer vocabulary (tokenizer.ggml.tokens)")
    if _uses_compact(meta, compact):
        from athanor.text.spm import SpmCodec

        backend = SpmCodec.from_metadata(meta)
        backend.tokenizers_builder = build_tokenizers_backend
    else:
        backend = build_tokenizers_backend(meta)

    def token(key: str) -> str | None:
        i = meta.get(f"tokenizer.ggml.{key}")
        return tokens[i] if i is not None and 0 <= i < len(tokens) else None

    stop_ids = [meta[f"tokenizer.ggml.{k}"] for k in ("eos_token_id", "eot_token_id", "eom_token_id")
                if f"tokenizer.ggml.{k}" in meta]
    return backend, {
        "bos_token": token("bos_token_id"),
        "eos_token": token("eos_token_id"),
        "chat_template": meta.get("tokenizer.chat_template"),
        "add_bos_token": bool(meta.get("tokenizer.ggml.add_bos_token", kind == "llama")),
        "stop_token_ids": list(dict.fromkeys(stop_ids)),
    }
