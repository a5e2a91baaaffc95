"""KnowledgeBase end to end with the real embedder and real SQLite: ingest every file type, cite, update
incrementally, remove, filter, threshold, hybrid fusion, parent–child, reopen."""

from __future__ import annotations

import pytest

from athanor.rag.kb import KnowledgeBase
from athanor.rag.search import rrf_fuse, weighted_fuse
from tests.rag.files import write_corpus, write_pdf


@pytest.fixture
def corpus(tmp_path):
    return write_corpus(tmp_path / "docs")


@pytest.fixture(scope="module")
def shared_kb(tmp_path_factory, embedder):
    """One base over the corpus for the read-only tests (embedding it is the slow part)."""
    folder = tmp_path_factory.mktemp("shared")
    corpus = write_corpus(folder / "docs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ATHANOR_HOME", str(folder / "home"))
        kb = KnowledgeBase.create("shared", embedder_obj=embedder)
        kb.add([folder / "docs"])
    yield kb, corpus
    kb.close()


@pytest.fixture
def kb(corpus, counting):
    kb = KnowledgeBase.create("docs", embedder_obj=counting)
    report = kb.add([corpus["txt"].parent])
    assert len(report.added) == len(corpus) and not report.failed
    yield kb
    kb.close()


@pytest.mark.parametrize("question,file,location", [
    ("how do I patch a punctured tyre", "manual.pdf", "page 2"),
    ("install the flux capacitor", "guide.md", "line 7, § Guide > Setup"),
    ("geysers erupt with boiling water", "cities.csv", "row 2"),
    ("the kettle whistles", "howto.docx", "§ Installation > Troubleshooting"),
    ("coral reefs bleach", "page.html", "§ Ocean > Reefs"),
    ("who found a moth in a relay", "people.json", "record 1"),
    ("giraffe eats acacia leaves", "notes.txt", "lines 1-3"),  # both paragraphs fit one chunk
])
def test_citations_point_to_file_and_location(shared_kb, question, file, location):
    kb, corpus = shared_kb
    top = kb.query(question, k=3)[0]
    assert top.source == str((corpus["txt"].parent / file).resolve())
    assert location in top.location()
    assert top.citation() == f"{top.source} ({top.location()})"


def test_unparseable_file_is_reported_and_the_rest_ingests(tmp_path, corpus, counting):
    (corpus["txt"].parent / "broken.pdf").write_bytes(b"%PDF-1.4 this is not a pdf")
    kb = KnowledgeBase.create("withbad", embedder_obj=counting)
    report = kb.add([corpus["txt"].parent])
    assert [p for p, _ in report.failed] == [str((corpus["txt"].parent / "broken.pdf").resolve())]
    assert "broken.pdf" in report.failed[0][1]
    assert len(report.added) == len(corpus)
    assert kb.store.counts()["documents"] == len(corpus)


def test_incremental_readd_embeds_only_the_changed_file_and_drops_deleted(kb, corpus, counting):
    counts = kb.store.counts()
    assert counts["chunks"] == counts["vectors"] == len(counting.texts)  # every chunk embedded once
    counting.texts.clear()
    report = kb.add([corpus["txt"].parent])
    assert len(report.unchanged) == len(corpus) and report.num_embedded == 0 and counting.texts == []

    corpus["txt"].write_text("Shopping list for the week.\n\nThe okapi hides in the rainforest of the Congo.\n")
    corpus["csv"].unlink()
    report = kb.add([corpus["txt"].parent])
    assert report.updated == [str(corpus["txt"].resolve())]
    assert report.removed == [str(corpus["csv"].resolve())]
    assert len(report.unchanged) == len(corpus) - 2
    assert counting.texts and all("okapi" in t for t in counting.texts)  # only the changed file's new chunk
    assert kb.query("okapi rainforest", k=1)[0].source == str(corpus["txt"].resolve())
    sources = {h.source for m in ("vector", "keyword", "hybrid") for h in kb.query("geysers giraffe", k=20, mode=m)}
    assert str(corpus["csv"].resolve()) not in sources
    assert not any("giraffe" in h.text for h in kb.query("giraffe acacia", k=20, mode="hybrid"))
    counts = kb.store.counts()
    assert counts["chunks"] == counts["vectors"] == len(kb.index)


def test_reopen_rebuilds_the_vector_index(kb, corpus):
    before = [(h.chunk_id, round(h.score, 5)) for h in kb.query("bicycles", k=4, mode="vector")]
    kb.close()
    again = KnowledgeBase.open("docs")
    assert [(h.chunk_id, round(h.score, 5)) for h in again.query("bicycles", k=4, mode="vector")] == before
    assert [kb_info["name"] for kb_info in KnowledgeBase.list()] == ["docs"]
    again.close()


def test_filters(shared_kb):
    kb, corpus = shared_kb
    assert {h.meta["ext"] for h in kb.query("water", k=10, filters={"ext": "pdf"})} == {"pdf"}
    hits = kb.query("bicycles", k=10, mode="vector", filters={"ext": "pdf", "page": 2})
    assert len(hits) == 1 and hits[0].meta["page"] == 2
    hits = kb.query("water", k=10, mode="keyword", filters={"source": "*/cities.csv"})
    assert hits and {h.source for h in hits} == {str(corpus["csv"].resolve())}
    assert kb.query("water", k=10, filters={"ext": "nothing"}) == []
    with pytest.raises(ValueError, match="filter key"):
        kb.query("water", filters={"bad key'": 1})


def test_threshold(shared_kb):
    kb, _ = shared_kb
    hits = kb.query("bicycles", k=10, mode="vector", threshold=0.3)
    assert hits and all(h.score >= 0.3 for h in hits)
    assert len(hits) < len(kb.query("bicycles", k=10, mode="vector"))
    assert kb.query("bicycles", k=10, mode="vector", threshold=0.99) == []


def test_rrf_by_hand():
    fused = rrf_fuse([[1, 2, 3], [3, 1, 4]], k=60)
    assert [d for d, _ in fused] == [1, 3, 2, 4]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 62) and fused[1][1] == pytest.approx(1 / 63 + 1 / 61)
    weighted = weighted_fuse([(1, 0.9), (2, 0.5), (3, 0.1)], [(3, 12.0), (4, 2.0)], alpha=0.25)
    # vector minmax: 1→1, 2→0.5, 3→0; keyword minmax: 3→1, 4→0
    assert weighted == [(3, 0.75), (1, 0.25), (2, 0.125), (4, 0.0)]


def test_hybrid_fuses_disagreeing_vector_and_keyword_rankings(tmp_path, counting):
    folder = tmp_path / "pets"
    folder.mkdir()
    texts = {  # 'feline' appears only in b and d; a and c are about cats without the word
        "a.txt": "My cat sleeps all day on the warm windowsill and purrs.",
        "b.txt": "Feline is listed in the crossword dictionary under F, page 212.",
        "c.txt": "Kittens and cats chase mice and play with balls of yarn.",
        "d.txt": "Feline leukemia vaccine schedule for young cats at the vet.",
        "e.txt": "The stock market closed higher on Tuesday.",
    }
    for name, text in texts.items():
        (folder / name).write_text(text)
    kb = KnowledgeBase.create("pets", embedder_obj=counting)
    kb.add([folder])
    name = lambda hits: [h.source.rsplit("/", 1)[1] for h in hits]
    q = "feline behaviour of pet cats"
    vector, keyword = name(kb.query(q, k=5, mode="vector")), name(kb.query(q, k=5, mode="keyword"))
    assert vector[0] != keyword[0]  # the two retrievers disagree on the best document
    assert set(keyword) <= set(texts) and "e.txt" not in keyword
    ids = {n: h.chunk_id for n, h in zip(vector, kb.query(q, k=5, mode="vector"))}
    expected = [d for d, _ in rrf_fuse([[ids[n] for n in vector], [ids[n] for n in keyword]])]
    hybrid = kb.query(q, k=5, mode="hybrid")
    assert [h.chunk_id for h in hybrid] == expected
    for h in hybrid:  # each fused score is Σ 1/(60 + rank) over the lists the chunk appears in
        ranks = [r for r in (h.vector_rank, h.keyword_rank) if r is not None]
        assert h.score == pytest.approx(sum(1 / (60 + r) for r in ranks))
        assert h.keyword_rank == (keyword.index(name([h])[0]) + 1 if name([h])[0] in keyword else None)
    weighted = kb.query(q, k=5, mode="hybrid", fusion="weighted", alpha=1.0)
    assert name(weighted) == vector  # alpha = 1 is vector-only


def test_parent_child_returns_parent_sections(tmp_path, counting):
    doc = tmp_path / "long.md"
    paras = [f"Paragraph {i} talks about topic {w} in some detail, with several words of filler text here."
             for i, w in enumerate(["volcanoes", "glaciers", "deserts", "rivers", "forests", "oceans"] * 3)]
    doc.write_text("# Earth\n\n" + "\n\n".join(paras) + "\n")
    kb = KnowledgeBase.create("pc", embedder_obj=counting, chunk_size=40, chunk_overlap=5, parent_size=120)
    kb.add([doc])
    hits = kb.query("glaciers", k=3)
    assert len({h.text for h in hits}) == len(hits)  # one hit per parent
    for h in hits:
        assert h.matched_text in h.text and len(h.text) > len(h.matched_text)
        assert kb.embedder.count_tokens(h.text) <= 120 and kb.embedder.count_tokens(h.matched_text) <= 40


def test_user_errors(kb, tmp_path):
    with pytest.raises(ValueError, match="already exists"):
        KnowledgeBase.create("docs")
    with pytest.raises(ValueError, match="no knowledge base"):
        KnowledgeBase.open("nope")
    with pytest.raises(ValueError, match="invalid"):
        KnowledgeBase.create("../escape")
    with pytest.raises(ValueError, match="mode"):
        kb.query("x", mode="telepathy")
    with pytest.raises(ValueError, match="no such"):
        kb.add([tmp_path / "missing"])


def test_pdf_helper_round_trips(tmp_path):
    from pypdf import PdfReader

    reader = PdfReader(str(write_pdf(tmp_path / "x.pdf", ["one", "two", "three"])))
    assert [p.extract_text() for p in reader.pages] == ["one", "two", "three"]
