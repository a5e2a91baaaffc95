"""`kb ask` end to end on the built-in smollm2 (135M), greedy: 10 questions over the Python reference topics in
`pydoc_data` whose answers a person can check (docs.python.org/3/reference), plus 2 the corpus cannot answer.

An answer counts as right when it contains the expected word (case-insensitive) — printed in full so a person
can overrule the match. Citations are reported as valid (point to a given source) / removed (made up).
`--prompt old` runs the prompt of the first RAG slice (`git show e966263:athanor/rag/ask.py`, saved as
--old-module) for a before/after on the same retrieval.

Run: OMP_NUM_THREADS=1 python benchmarks/bench_rag_ask.py [--home DIR]   (builds the pydoc base if missing)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

QUESTIONS = [  # (question, word a right answer contains)
    ("What exception is raised when the expression of an assert statement is false?", "AssertionError"),
    ("Which statement exits the nearest enclosing for or while loop?", "break"),
    ("Which statement does nothing and is used as a placeholder?", "pass"),
    ("Which method of a context manager is called when a with statement is entered?", "__enter__"),
    ("What suffix letter marks an imaginary literal?", "j"),
    ("Which statement makes a name inside a function refer to a module-level variable?", "global"),
    ("Which statement rebinds a variable of the nearest enclosing function scope?", "nonlocal"),
    ("What prefix starts a hexadecimal integer literal?", "0x"),
    ("Which keyword creates an anonymous function?", "lambda"),
    ("Which keyword is used inside a generator function to produce a value?", "yield"),
]
UNANSWERABLE = ["What is the capital of Australia?", "How many moons does Jupiter have?"]


def _right(answer: str, key: str) -> bool:
    import re

    if len(key) == 1:  # a single letter: as a word or right after digits (3j, 1.5j)
        return re.search(rf"(?<![A-Za-z]){key}(?![A-Za-z])", answer, re.IGNORECASE) is not None
    return key.lower() in answer.lower()


def _base(home: Path):
    os.environ["ATHANOR_HOME"] = str(home)
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_rag import _write_topics

    from athanor.rag.kb import KnowledgeBase

    if not (home / "kb" / "pydoc" / "kb.sqlite").exists():
        _write_topics(home / "topics")
        KnowledgeBase.create("pydoc").add([home / "topics"])
    return KnowledgeBase.open("pydoc")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--home", type=Path, default=Path("/tmp/athanor_bench_ask"))
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--prompt", choices=["new", "old"], default="new")
    ap.add_argument("--old-module", type=Path, help="the earlier ask.py, for --prompt old")
    ap.add_argument("-k", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=96)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    from athanor.llm.base import load_chat_model
    from athanor.rag import ask as ask_mod

    kb, model = _base(args.home), load_chat_model(args.model)
    if args.prompt == "old":
        import importlib.util

        spec = importlib.util.spec_from_file_location("old_ask", args.old_module)
        old = sys.modules["old_ask"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(old)
    right, t0 = 0, time.perf_counter()
    for q, key in QUESTIONS + [(q, None) for q in UNANSWERABLE]:
        if args.prompt == "old":
            a = old.ask(kb, model, q, k=args.k, max_tokens=args.max_tokens, temperature=0)
            f = ask_mod.CitationFilter(len(a.sources))
            f.feed(a.text + "\n")
            cited, invalid, text = f.cited, f.invalid, a.text
        else:
            a = ask_mod.ask(kb, model, q, k=args.k, max_tokens=args.max_tokens, temperature=0)
            cited, invalid, text = a.cited, a.invalid_citations, a.text
        ok = _right(text, key) if key else ("don't know" in text.lower() or "do not know" in text.lower())
        right += ok if key else 0
        src = ", ".join(Path(h.source).stem for h in a.sources)
        print(f"\n{'RIGHT' if ok else 'WRONG'}  Q: {q}\n  sources: {src}\n  cited {cited} removed {invalid}\n"
              f"  A: {' '.join(text.split())[:400]}", flush=True)
    print(f"\n{right}/{len(QUESTIONS)} answerable questions right ({args.prompt} prompt, k={args.k}, greedy, "
          f"{args.max_tokens} tokens max, {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
