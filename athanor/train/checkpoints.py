"""Which `checkpoint-N` folder a run resumes from: the last whole one, never one half-written by a killed run.

transformers' Trainer writes a checkpoint in steps (weights, optimizer, scheduler, RNG state, and
trainer_state.json last); a run killed in the middle leaves a folder that `get_last_checkpoint` would still
pick, and resuming from it fails deep inside torch with a message about pickles or missing keys. Here a folder
is whole when it has trainer_state.json, weights, and every safetensors file is as long as its header says.
Not for saving checkpoints (transformers does that) or for the training loop.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable
from pathlib import Path

from athanor.errors import AthanorError

_WEIGHTS = ("adapter_model.safetensors", "model.safetensors", "model.safetensors.index.json", "adapter_model.bin",
            "pytorch_model.bin")


def checkpoint_problem(folder: Path) -> str | None:
    """None for a whole checkpoint, else what is wrong with it, in a few words."""
    if not (folder / "trainer_state.json").is_file():
        return "no trainer_state.json (the run stopped while saving it)"
    try:
        json.loads((folder / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return "trainer_state.json is cut short or unreadable"
    if not any((folder / w).is_file() for w in _WEIGHTS):
        return "no weights file"
    for f in sorted(folder.glob("*.safetensors")):
        problem = _safetensors_problem(f)
        if problem:
            return f"{f.name} {problem}"
    return None


def _safetensors_problem(f: Path) -> str | None:
    """A safetensors file shorter than its own header says (a save cut short)."""
    size = f.stat().st_size
    try:
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            if n > size - 8:
                return "is truncated (header runs past the end)"
            header = json.loads(fh.read(n))
    except (OSError, struct.error, ValueError):
        return "is truncated or corrupt"
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]
    if 8 + n + max(ends, default=0) > size:
        return "is truncated (tensor data runs past the end)"
    return None


def _step(folder: Path) -> int:
    m = re.fullmatch(r"checkpoint-(\d+)", folder.name)
    return int(m.group(1)) if m else -1


def last_whole_checkpoint(output_dir: str | Path, echo: Callable[[str], None] = print) -> Path:
    """The highest-step whole `checkpoint-N` in `output_dir`; each newer broken one is named and skipped."""
    folders = sorted((p for p in Path(output_dir).glob("checkpoint-*") if p.is_dir() and _step(p) >= 0),
                     key=_step, reverse=True)
    if not folders:
        raise AthanorError(f"resume_from_checkpoint: true, but {output_dir} holds no checkpoint-* folder yet")
    for folder in folders:
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder
        echo(f"skipping {folder.name}: incomplete, {problem}")
    raise AthanorError(f"resume_from_checkpoint: every checkpoint in {output_dir} is incomplete "
                       f"({folders[0].name}: {checkpoint_problem(folders[0])}); start without resuming")


def check_resume_folder(folder: str | Path) -> Path:
    """A checkpoint named by path must be whole; else one line saying what is missing and what to use instead."""
    path = Path(folder).expanduser()
    problem = checkpoint_problem(path)
    if problem is None:
        return path
    hint = ""
    try:
        hint = f"; the last whole one is {last_whole_checkpoint(path.parent, echo=lambda _: None)}"
    except AthanorError:
        pass
    raise AthanorError(f"resume_from_checkpoint: {path} is incomplete: {problem}{hint}")
