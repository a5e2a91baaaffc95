"""ATHANOR_HOME, resolved in one place: where models, knowledge bases, workflows, sessions and caches live.

`athanor_home()` is `$ATHANOR_HOME`, else `~/.athanor`, read at each call (tests and tools switch it per run).
Not for what lives inside it: the store (models/store.py), knowledge bases (rag/), workflows and runs (workflow/),
agent sessions (agent/memory.py) and the kernel cache (cbuild.py) each name their own sub-folder.
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "ATHANOR_HOME"


def athanor_home() -> Path:
    """$ATHANOR_HOME, else ~/.athanor."""
    return Path(os.environ.get(HOME_ENV) or "~/.athanor").expanduser()


def explicit_home() -> Path | None:
    """$ATHANOR_HOME when it is set, else None (for caches that default somewhere else, like ~/.cache)."""
    home = os.environ.get(HOME_ENV)
    return Path(home).expanduser() if home else None
