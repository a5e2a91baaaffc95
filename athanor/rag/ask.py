"""`kb ask`: retrieve, put short numbered sources in the prompt, let a ChatModel answer citing [n], check the [n].

Made for small local models as much as big ones: the prompt is short (2 sources by default, each cut to 700 chars,
no file paths in it — the numbered source list printed under the answer maps [n] to file and location), the
instruction is to answer from the context only and cite [n], and two things are checked rather than trusted:
- a citation [n] must point to a retrieved source: any other number is removed from the answer and reported
  (`Answer.invalid_citations`), also while streaming (`CitationFilter` holds back an open "[…" until it closes);
- when no chunk is similar enough to the question (best cosine below `min_score`), the model is not asked at
  all and the answer is `NO_ANSWER` — a 135M model given unrelated context invents an answer.

The model is reached only through the `llm/` protocol (`ChatModel.chat` / `.stream`), so the same code answers
with the in-process engine, `athanor serve`, or any OpenAI-compatible server.

Each question is a `chain` span (athanor/tracing.py) holding the retrieval spans and the answer's `llm` span.

Not for: retrieval itself (kb.py), or judging whether a cited source really supports the sentence.
"""

from __future__ import annotations

import contextlib
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from athanor import tracing
from athanor.rag.search import KB

SYSTEM = ("You answer questions using only the numbered context. Put the number of the context you used in "
          "brackets after the answer, like [1]. If the context does not contain the answer, reply: I don't know.")
NO_ANSWER = "I don't know: nothing in the knowledge base matches the question closely enough."
MIN_SCORE = 0.30  # MiniLM cosine of the best chunk; see docs/rag.md for how it was chosen
STOP = ["Question:"]  # small models go on to invent the next question of the prompt's pattern
FINISH = "athanor.rag.finish_reason"  # the model's, or "no_context"
_CITE = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")


@dataclass
class Answer:
    text: str
    sources: list  # kb.Hit, numbered from 1 in this order (empty when nothing matched)
    finish_reason: str  # the model's, or "no_context" when the model was not asked
    cited: list[int] = field(default_factory=list)  # valid [n] the answer uses, in order of first use
    invalid_citations: list[int] = field(default_factory=list)  # [n] that pointed to no source (removed)


def _user(question: str, blocks: list[str]) -> str:
    return "Context:\n" + "\n".join(blocks) + f"\n\nQuestion: {question}\nAnswer briefly and cite the context as [n]."


def build_messages(question: str, hits: list, max_chars_per_source: int = 700) -> list[dict]:
    """System + user message; context n is hits[n-1]'s text, cut at a word boundary. (A worked example turn
    before the question was tried and answered fewer questions right on smollm2: docs/rag.md.)"""
    blocks = [f"[{n}] {_cut(' '.join(h.text.split()), max_chars_per_source)}" for n, h in enumerate(hits, start=1)]
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": _user(question, blocks)}]


def _cut(text: str, max_chars: int) -> str:
    return text if len(text) <= max_chars else text[:max_chars].rsplit(" ", 1)[0] + " …"


class CitationFilter:
    """Streams text through, dropping citations [n] (or [n, m]) whose numbers are not 1..num_sources."""

    def __init__(self, num_sources: int):
        self.num_sources, self._held = num_sources, ""
        self.cited: list[int] = []
        self.invalid: list[int] = []

    def feed(self, text: str) -> str:
        self._held += text
        start = self._held.rfind("[")
        if start != -1 and "]" not in self._held[start:] and re.fullmatch(r"\[[\d,\s]*", self._held[start:]):
            out, self._held = self._held[:start], self._held[start:]  # a citation may be opening: hold it back
            return self._clean(out)
        out, self._held = self._held, ""
        return self._clean(out)

    def flush(self) -> str:
        out, self._held = self._held, ""
        if re.fullmatch(r"\[[\d,\s]*", out):  # a citation cut off by the length limit: [ and a number or none
            self._clean(out + "]")  # still recorded as cited / invalid
            return ""
        return self._clean(out)

    def _clean(self, text: str) -> str:
        def keep(m: re.Match) -> str:
            nums = [int(x) for x in re.split(r"\s*,\s*", m.group(1))]
            good = [n for n in nums if 1 <= n <= self.num_sources]
            self.invalid += [n for n in nums if n not in good and n not in self.invalid]
            self.cited += [n for n in good if n not in self.cited]
            return "[" + ", ".join(map(str, good)) + "]" if good else ""

        return _CITE.sub(keep, text)


def retrieve(kb, question: str, k: int, mode: str, filters: dict | None, min_score: float | None) -> list:
    """The hits to answer from, or [] when the best chunk's cosine to the question is below `min_score`."""
    if min_score is not None and not kb.query(question, k=1, mode="vector", filters=filters, threshold=min_score):
        return []
    return kb.query(question, k=k, mode=mode, filters=filters)


def ask(kb, model, question: str, k: int = 2, mode: str = "hybrid", filters: dict | None = None,
        min_score: float | None = MIN_SCORE, **options) -> Answer:
    """Traced as a `chain` span holding the retrieval spans and the answer's `llm` span."""
    with _chain(kb, question) as span:
        hits = retrieve(kb, question, k, mode, filters, min_score)
        if not hits:
            return _answered(span, Answer(NO_ANSWER, [], "no_context"))
        resp = model.chat(build_messages(question, hits), **{"stop": STOP, **options})
        f = CitationFilter(len(hits))
        text = (f.feed(resp.text) + f.flush()).strip()
        return _answered(span, Answer(text, hits, resp.finish_reason, f.cited, f.invalid))


def ask_stream(kb, model, question: str, k: int = 2, mode: str = "hybrid", filters: dict | None = None,
               min_score: float | None = MIN_SCORE, **options) -> tuple[list, Iterator[str], CitationFilter]:
    """(sources, cleaned text pieces as they arrive, the filter: read .cited / .invalid after the stream).
    Traced like `ask`; the chain span ends when the pieces are read (or abandoned)."""
    span = tracing.start_span("kb ask", "chain", **{KB: kb.path.name})
    span.set_content(input=question)
    try:
        with tracing.use_span(span):
            hits = retrieve(kb, question, k, mode, filters, min_score)
    except BaseException as e:
        span.fail(e)
        span.end()
        raise
    f = CitationFilter(len(hits))
    if not hits:
        _answered(span, Answer(NO_ANSWER, [], "no_context"))
        span.end()
        return [], iter([NO_ANSWER]), f

    def pieces() -> Iterator[str]:
        text = []
        try:
            with contextlib.closing(iter(model.stream(build_messages(question, hits), **{"stop": STOP, **options}))) \
                    as deltas:
                with tracing.use_span(span):  # the model's llm span opens at the first delta: under the chain
                    first = next(deltas, None)
                for d in itertools.chain([first] if first is not None else [], deltas):
                    if out := f.feed(d.text):
                        text.append(out)
                        yield out
            if out := f.flush():
                text.append(out)
                yield out
        except GeneratorExit:
            span.set("athanor.aborted", True)
            raise
        except BaseException as e:
            span.fail(e)
            raise
        finally:
            span.set_content(output="".join(text).strip())
            span.end()

    return hits, pieces(), f


@contextlib.contextmanager
def _chain(kb, question: str) -> Iterator[tracing.Span]:
    with tracing.span("kb ask", "chain", **{KB: kb.path.name}) as span:
        span.set_content(input=question)
        yield span


def _answered(span: tracing.Span, answer: Answer) -> Answer:
    span.set(FINISH, answer.finish_reason)
    span.set_content(output=answer.text)
    return answer


def format_sources(hits: list) -> str:
    return "\n".join(f"[{n}] {h.citation()}" for n, h in enumerate(hits, start=1))
