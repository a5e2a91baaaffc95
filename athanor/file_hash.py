"""Hashing files without reading them whole: the one streaming read behind every content digest (eval data and model
digests in ops/evals.py, lineage records in train/lineage.py). Not for: what a digest covers (those rooms decide)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def feed_file(h, path: str | Path, block: int = 1 << 20):
    """Update hasher `h` with the bytes of `path`, a megabyte at a time; returns `h`."""
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(block), b""):
            h.update(chunk)
    return h


def file_sha256(path: str | Path) -> str:
    """The hex sha256 of a file's bytes."""
    return feed_file(hashlib.sha256(), path).hexdigest()
