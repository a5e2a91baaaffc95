"""kill -9 during `kb add`: the base opens and answers with every file committed before the kill, and a re-add
finishes the job without re-embedding what was already in."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from athanor.rag.kb import KnowledgeBase

NUM_FILES = 120
ANIMALS = ["otter", "heron", "badger", "lynx", "walrus", "gecko", "ibis", "marmot", "tapir", "quokka"]


def _write_files(folder: Path) -> None:
    folder.mkdir()
    for i in range(NUM_FILES):
        animal = ANIMALS[i % len(ANIMALS)]
        (folder / f"note{i:04d}.txt").write_text(
            f"Field note {i}: the {animal} number {i} was seen near the river at dawn.\n\n"
            f"Observer {i} wrote that the {animal} ate {i % 7} fish and then slept.\n\n"
            f"Code word for note {i} is zeta{i}q.\n")


def _committed(db: Path) -> int:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.1)
        try:
            return con.execute("SELECT count(*) FROM documents").fetchone()[0]
        finally:
            con.close()
    except sqlite3.OperationalError:  # not created yet, or busy this instant
        return 0


def test_kill_9_during_add_leaves_a_consistent_queryable_base(tmp_path, embedder):
    folder = tmp_path / "notes"
    _write_files(folder)
    kb = KnowledgeBase.create("crash", embedder_obj=embedder)
    kb.close()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "athanor.rag.cli", "add", "crash", str(folder)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=Path(__file__).parents[2])
    db = kb.path / "kb.sqlite"
    deadline = time.monotonic() + 150
    try:
        while _committed(db) < 5:  # 1. wait until a few files are committed, then kill mid-ingest
            assert proc.poll() is None, f"`kb add` exited early: {proc.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, "no file committed in time"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL

    # 2. the base opens; every committed file is whole: chunks, FTS rows and vectors agree
    kb = KnowledgeBase.open("crash", embedder=embedder)
    docs = kb.documents()
    assert 5 <= len(docs) < NUM_FILES, "the kill came too late to test anything"
    con = kb.store.db
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    counts = kb.store.counts()
    assert counts["chunks"] == counts["vectors"] == sum(d.num_chunks for d in docs) > 0
    assert con.execute("SELECT count(*) FROM chunks_fts").fetchone()[0] == counts["chunks"]
    assert len(kb.index) == counts["chunks"]

    # 3. queries find committed files by keyword and by vector
    i = int(Path(docs[-1].source).stem.removeprefix("note"))
    for mode in ("keyword", "hybrid"):
        assert kb.query(f"zeta{i}q", k=1, mode=mode)[0].source == docs[-1].source
    vector_sources = {h.source for h in kb.query(f"the {ANIMALS[i % 10]} number {i} near the river", k=5,
                                                 mode="vector")}
    assert docs[-1].source in vector_sources

    # 4. a re-add finishes: committed files unchanged, the rest added
    report = kb.add([folder])
    assert len(report.unchanged) == len(docs) and len(report.added) == NUM_FILES - len(docs)
    assert kb.store.counts()["documents"] == NUM_FILES
    kb.close()
