"""`kb ask`: retrieve, put numbered sources in the prompt, let a ChatModel answer citing [n].

The model is reached only through the `llm/` protocol (`ChatModel.chat` / `.stream`), so the same code answers
with the in-process engine, `athanor serve`, or any OpenAI-compatible server.

Not for: retrieval itself (kb.py) or checking that the model's citations are true (the sources list printed
under the answer is what the reader checks against).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

SYSTEM = ("Answer the question using only the numbered sources. Cite the sources you use as [1], [2], ... "
          "If the sources do not contain the answer, say you do not know.")


@dataclass
class Answer:
    text: str
    sources: list  # kb.Hit, numbered from 1 in this order
    finish_reason: str


def build_messages(question: str, hits: list, max_chars_per_source: int = 1500) -> list[dict]:
    """System + user message; source n is hits[n-1], labelled with its file and location."""
    blocks = [f"[{n}] {h.citation()}\n{h.text[:max_chars_per_source]}" for n, h in enumerate(hits, start=1)]
    user = "Sources:\n\n" + "\n\n".join(blocks) + f"\n\nQuestion: {question}"
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def ask(kb, model, question: str, k: int = 4, mode: str = "hybrid", filters: dict | None = None,
        **options) -> Answer:
    hits = kb.query(question, k=k, mode=mode, filters=filters)
    resp = model.chat(build_messages(question, hits), **options)
    return Answer(resp.text, hits, resp.finish_reason)


def ask_stream(kb, model, question: str, k: int = 4, mode: str = "hybrid", filters: dict | None = None,
               **options) -> tuple[list, Iterator[str]]:
    """(sources, text pieces as they arrive)."""
    hits = kb.query(question, k=k, mode=mode, filters=filters)
    return hits, (d.text for d in model.stream(build_messages(question, hits), **options))


def format_sources(hits: list) -> str:
    return "\n".join(f"[{n}] {h.citation()}" for n, h in enumerate(hits, start=1))
