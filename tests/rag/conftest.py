"""RAG fixtures: the real all-MiniLM-L6-v2 embedder (loaded once per session) and a counting wrapper."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def embedder():
    from athanor.rag.embed import get_embedder

    return get_embedder("all-minilm-l6-v2")  # the same cached instance KnowledgeBase.open uses

class CountingEmbedder:
    """The real embedder, counting the texts it is asked to embed."""

    def __init__(self, inner):
        self.inner, self.name, self.dim, self.max_tokens = inner, inner.name, inner.dim, inner.max_tokens
        self.texts: list[str] = []

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def embed(self, texts: list[str]) -> np.ndarray:
        self.texts += texts
        return self.inner.embed(texts)

@pytest.fixture
def counting(embedder):
    return CountingEmbedder(embedder)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """MiniLM on a few short texts is fastest on one thread; two threads crawl when the shared cores are busy."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
