"""The embedding cache: unchanged chunk text is never re-embedded, and entries no chunk uses are dropped (on
update, on remove, and by `kb gc` for leftovers of a crash); bases from before the text_hash column migrate."""

from __future__ import annotations

import sqlite3

from typer.testing import CliRunner

from athanor.rag.cli import kb_app
from athanor.rag.kb import KnowledgeBase
from athanor.rag.store import text_hash

SECTIONS = ["# Bees\n\nBees dance to tell the hive where the flowers are.",
            "# Owls\n\nOwls turn their heads almost all the way round.",
            "# Moles\n\nMoles dig tunnels with their broad front paws."]


def _cache(kb) -> set[str]:
    return {r[0] for r in kb.store.db.execute("SELECT text_hash FROM embed_cache")}


def _live(kb) -> set[str]:
    return {text_hash(r[0]) for r in kb.store.db.execute("SELECT text FROM chunks")}


def test_update_embeds_only_new_text_and_drops_the_old(tmp_path, counting):
    doc = tmp_path / "animals.md"
    doc.write_text("\n\n".join(SECTIONS))
    (tmp_path / "same.md").write_text(SECTIONS[2])  # the moles text also lives in another file
    kb = KnowledgeBase.create("c", embedder_obj=counting)
    kb.add([doc, tmp_path / "same.md"])
    assert _cache(kb) == _live(kb) and len(_live(kb)) == 3
    counting.texts.clear()
    doc.write_text("\n\n".join([SECTIONS[0], "# Owls\n\nOwls hunt mice at night in silence.", SECTIONS[2]]))
    report = kb.add([doc])
    assert report.updated == [str(doc.resolve())] and report.num_embedded == 1
    assert len(counting.texts) == 1 and "hunt mice" in counting.texts[0]  # bees and moles came from the cache
    assert _cache(kb) == _live(kb) and not any("turn their heads" in t for t in _texts(kb))

    kb.remove(doc)  # the moles text is still used by same.md: its vector stays cached
    assert _cache(kb) == _live(kb) == {text_hash(t) for t in _texts(kb)} and len(_cache(kb)) == 1
    counting.texts.clear()
    kb.add([doc])
    assert sorted(counting.texts) == sorted(t for t in _texts(kb) if "Moles" not in t)  # removed → re-embedded


def _texts(kb):
    return [r[0] for r in kb.store.db.execute("SELECT text FROM chunks")]


def test_gc_drops_what_a_crash_left_behind(tmp_path, counting):
    (tmp_path / "a.md").write_text(SECTIONS[0])
    kb = KnowledgeBase.create("g", embedder_obj=counting)
    kb.add([tmp_path / "a.md"])
    # a kill -9 after the cache commit and before the document's commit leaves vectors nothing uses
    kb.store.cache_vectors([(text_hash("orphan one"), counting.embed(["x"])[0]),
                            (text_hash("orphan two"), counting.embed(["y"])[0])])
    assert kb.store.counts()["cached_vectors"] == 3
    kb.close()
    r = CliRunner().invoke(kb_app, ["gc", "g"])
    assert r.exit_code == 0 and "dropped 2 unused cached embeddings" in r.output, r.output
    kb = KnowledgeBase.open("g", counting)
    assert _cache(kb) == _live(kb) and kb.gc() == 0


def test_a_base_without_text_hash_migrates(tmp_path, counting):
    (tmp_path / "a.md").write_text(SECTIONS[0] + "\n\n" + SECTIONS[1])
    kb = KnowledgeBase.create("m", embedder_obj=counting)
    kb.add([tmp_path / "a.md"])
    kb.close()
    db = sqlite3.connect(kb.path / "kb.sqlite")  # make it look like a base from before the column existed
    db.execute("DROP INDEX chunks_hash")
    db.execute("ALTER TABLE chunks DROP COLUMN text_hash")
    db.commit()
    db.close()
    kb = KnowledgeBase.open("m", counting)
    assert _live(kb) == {r[0] for r in kb.store.db.execute("SELECT text_hash FROM chunks")}
    kb.remove(tmp_path / "a.md")
    assert kb.store.counts() == {"documents": 0, "chunks": 0, "vectors": 0, "cached_vectors": 0}
