"""`athanor kb` commands through typer's runner: create, add, query (text and JSON), list, eval, rm."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from athanor.rag.cli import kb_app, parse_filters
from tests.rag.files import write_corpus


def test_kb_commands(tmp_path, embedder):
    corpus = write_corpus(tmp_path / "docs")
    (tmp_path / "docs" / "broken.json").write_text("{oops")
    run = CliRunner().invoke
    r = run(kb_app, ["create", "docs", "--chunk-overlap", "20"])
    assert r.exit_code == 0, r.output
    assert "chunks 254/20 tokens" in r.output  # min(500, MiniLM's 256 positions minus [CLS] and [SEP])
    r = run(kb_app, ["create", "big", "--chunk-size", "500", "--index", "exact"])
    assert r.exit_code == 0 and "note: chunk size 500 capped to 254 tokens" in r.output, r.output
    assert "chunks 254/50 tokens" in r.output
    run(kb_app, ["rm", "big"])

    r = run(kb_app, ["add", "docs", str(tmp_path / "docs")])
    assert r.exit_code == 0, r.output
    assert f"{len(corpus)} added" in r.output and "1 failed" in r.output and "broken.json" in r.output

    r = run(kb_app, ["query", "docs", "patch a punctured tyre", "-k", "2", "--json"])
    assert r.exit_code == 0, r.output
    hits = [json.loads(line) for line in r.output.splitlines()]
    assert hits[0]["source"].endswith("manual.pdf") and hits[0]["location"] == "page 2" and hits[0]["rank"] == 1

    r = run(kb_app, ["query", "docs", "water", "--filter", "ext=csv", "--mode", "keyword"])
    assert r.exit_code == 0 and "[1]" in r.output and "cities.csv (row 2)" in r.output

    r = run(kb_app, ["list"])
    assert r.exit_code == 0 and r.output.split()[:2] == ["docs", str(len(corpus))]

    (tmp_path / "q.jsonl").write_text(json.dumps({"query": "patch a punctured tyre", "relevant": ["manual.pdf"]}))
    r = run(kb_app, ["eval", "docs", str(tmp_path / "q.jsonl"), "-k", "1"])
    assert r.exit_code == 0, r.output
    assert [line.split()[0] for line in r.output.splitlines()[1:]] == ["vector", "keyword", "hybrid"]
    assert all(line.split()[1:] == ["1.000", "1.000", "1.000"] for line in r.output.splitlines()[1:])

    r = run(kb_app, ["rm", "docs"])
    assert r.exit_code == 0 and "deleted docs" in r.output
    assert run(kb_app, ["list"]).output == ""


def test_parse_filters():
    assert parse_filters(["page=2", "ext=pdf", "source=*/a.md"]) == {"page": 2, "ext": "pdf", "source": "*/a.md"}
    assert parse_filters(None) is None
    import pytest

    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_filters(["nokey"])


def test_importing_the_cli_loads_nothing_heavy():
    import subprocess
    import sys

    code = ("import sys, athanor.rag.cli; heavy = {'torch', 'sentence_transformers', 'faiss', 'numpy'} & "
            "set(sys.modules); assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)
