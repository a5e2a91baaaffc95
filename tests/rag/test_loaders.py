"""Loaders on real files of every type written by the test: text and the location metadata citations use."""

from __future__ import annotations

import pytest

from athanor.rag import loaders
from tests.rag.files import write_corpus


@pytest.fixture
def corpus(tmp_path):
    return write_corpus(tmp_path / "docs")


def _find(doc, needle):
    hits = [b for b in doc.blocks if needle in b.text]
    assert hits, f"{needle!r} not in {[b.text for b in doc.blocks]}"
    return hits[0]


def test_txt_paragraphs_with_lines(corpus):
    doc = loaders.load_file(corpus["txt"])
    assert doc.blocks[0].text == "Shopping list for the week."
    assert _find(doc, "giraffe").meta == {"line": 3}
    assert doc.source == str(corpus["txt"].resolve()) and len(doc.content_hash) == 64
    assert doc.mtime == corpus["txt"].stat().st_mtime
    assert doc.meta["ext"] == "txt"


def test_markdown_heading_path_and_line(corpus):
    doc = loaders.load_file(corpus["md"])
    assert _find(doc, "flux capacitor").meta == {"heading_path": ["Guide", "Setup"], "line": 7}
    assert _find(doc, "plutonium").meta["heading_path"] == ["Guide", "Setup", "Notes"]
    assert not any(b.text.startswith("#") for b in doc.blocks)


def test_markdown_fence_is_not_a_heading(tmp_path):
    p = tmp_path / "f.md"
    p.write_text("# A\n\n```\n# not a heading\n```\n")
    doc = loaders.load_file(p)
    assert doc.blocks[0].meta["heading_path"] == ["A"] and "# not a heading" in doc.blocks[0].text


def test_html_headings_skip_script_and_style(corpus):
    doc = loaders.load_file(corpus["html"])
    assert _find(doc, "Coral").meta["heading_path"] == ["Ocean", "Reefs"]
    assert _find(doc, "Whales").meta["heading_path"] == ["Ocean"]
    text = " ".join(b.text for b in doc.blocks)
    assert "var x" not in text and "color" not in text and "title" not in text


def test_pdf_pages(corpus):
    doc = loaders.load_file(corpus["pdf"])
    assert _find(doc, "bicycles").meta == {"page": 1}
    assert _find(doc, "punctured tyre").meta == {"page": 2}


def test_docx_heading_styles(corpus):
    doc = loaders.load_file(corpus["docx"])
    assert _find(doc, "kettle").meta["heading_path"] == ["Installation", "Troubleshooting"]
    assert _find(doc, "installer").meta["heading_path"] == ["Installation"]


def test_json_jsonl_csv_records(corpus):
    grace = _find(loaders.load_file(corpus["json"]), "moth")
    assert grace.meta == {"record": 1} and "name: Grace" in grace.text
    volcano = _find(loaders.load_file(corpus["jsonl"]), "volcano")
    assert volcano.meta == {"line": 3, "record": 1}
    geysers = _find(loaders.load_file(corpus["csv"]), "geysers")
    assert geysers.meta == {"row": 2} and "city: Reykjavik" in geysers.text


@pytest.mark.parametrize("name,data", [("bad.json", b"{not json"), ("bad.pdf", b"%PDF-1.4 garbage"),
                                       ("bad.docx", b"PK not a zip"), ("bad.txt", b"\xff\xfe\xfa bytes")])
def test_unparseable_file_raises_load_error(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data)
    with pytest.raises(loaders.LoadError, match=name):
        loaders.load_file(p)


def test_iter_files_recursive_skips_hidden_and_unsupported(tmp_path, corpus):
    (tmp_path / "docs" / "sub").mkdir()
    (tmp_path / "docs" / "sub" / "deep.md").write_text("deep")
    (tmp_path / "docs" / ".git").mkdir()
    (tmp_path / "docs" / ".git" / "x.md").write_text("hidden")
    (tmp_path / "docs" / "image.png").write_bytes(b"\x89PNG")
    names = {p.name for p in loaders.iter_files([tmp_path / "docs"])}
    assert names == {p.name for p in corpus.values()} | {"deep.md"}
    with pytest.raises(ValueError, match="no such"):
        loaders.iter_files([tmp_path / "missing"])
