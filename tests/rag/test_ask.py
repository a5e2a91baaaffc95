"""`kb ask`: the prompt carries numbered sources with their locations; end to end on the built-in smollm2."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from athanor.rag.ask import build_messages, format_sources
from athanor.rag.cli import kb_app
from athanor.rag.kb import Hit, KnowledgeBase
from tests.rag.files import write_corpus


def _hit(source, text, **loc):
    return Hit(1, 0.5, text, text, {"source": source, **loc})


def test_prompt_numbers_sources_with_locations():
    hits = [_hit("/d/manual.pdf", "Patch the tyre with glue.", page=2),
            _hit("/d/guide.md", "Keep plutonium in lead.", line=9, heading_path=["Guide", "Notes"])]
    system, user = build_messages("How to patch?", hits)
    assert system["role"] == "system" and "[1]" in system["content"]
    assert user["content"].startswith("Sources:\n\n[1] /d/manual.pdf (page 2)\nPatch the tyre with glue.\n\n"
                                      "[2] /d/guide.md (line 9, § Guide > Notes)\nKeep plutonium in lead.")
    assert user["content"].endswith("Question: How to patch?")
    assert format_sources(hits) == "[1] /d/manual.pdf (page 2)\n[2] /d/guide.md (line 9, § Guide > Notes)"


@pytest.mark.slow
def test_kb_ask_end_to_end_on_smollm2(tmp_path, embedder):
    corpus = write_corpus(tmp_path / "docs")
    KnowledgeBase.create("docs", embedder_obj=embedder).add([tmp_path / "docs"])
    r = CliRunner().invoke(kb_app, ["ask", "docs", "How do I patch a punctured tyre?", "--model", "smollm2",
                                    "-k", "2", "--max-tokens", "24"])
    assert r.exit_code == 0, r.output
    answer, _, sources = r.output.partition("\n\nSources:\n")
    assert answer.strip()  # the model said something (its content is not judged: 135M parameters)
    assert sources.splitlines()[0] == f"[1] {corpus['pdf'].resolve()} (page 2)"
