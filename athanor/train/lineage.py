"""Where a trained adapter or export came from, written beside it as `lineage.json` (`<file>.lineage.json` for a
GGUF export) so the store can fold it into the model's manifest when the result is registered.

A training run records: the base (as named, the weights it resolved to, sha256), stage and method, the config keys
the YAML (and key=value overrides) set, and every dataset file with its sha256, plus the trace ids a dataset was
exported from (ops/datasets.py writes them as `_trace_ids` in its dataset_info.json entry). An export records its
base and each merged adapter with that adapter's own lineage.json.
Not for: reading or showing lineage (ops/lineage.py), the manifest itself (models/store.py).
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from athanor.file_hash import feed_file
from athanor.models.store import lineage_sidecar, read_lineage


def sha256_of(path: str | Path) -> str:
    """'sha256:...' of a file, or of a folder's files (relative names and contents, sorted)."""
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    h = hashlib.sha256()
    for p in files:
        h.update((str(p.relative_to(path)) if path.is_dir() else p.name).encode() + b"\0")
        feed_file(h, p)
    return "sha256:" + h.hexdigest()


def write_lineage(path: str | Path, record: dict) -> Path:
    file = lineage_sidecar(path)
    file.write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
    return file


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def base_record(name: str) -> dict[str, Any]:
    """The base as named, the weights it means and their digest (plus a store model's adapters and lineage)."""
    from athanor.models.store import Store

    m = Store().resolve(name)
    out: dict[str, Any] = {"name": name, "weights": m.weights, "digest": sha256_of(m.weights)}
    if m.adapters:
        out["adapters"] = [{"path": a, "digest": sha256_of(a)} for a in m.adapters]
    if m.lineage:
        out["lineage"] = m.lineage
    return out


def dataset_records(names: list[str], dataset_dir: str | None) -> list[dict]:
    """Each dataset's files with sha256, and the trace ids its registry entry says it came from."""
    from athanor.data.registry import read_registry, resolve_dataset

    out = []
    for name in names:
        spec = resolve_dataset(name, dataset_dir)
        files = spec.files or [spec.path]
        entry = read_registry(dataset_dir).get(name) or _entry_for_file(files[0])
        rec: dict[str, Any] = {"name": name, "files": [{"path": str(Path(f).resolve()), "sha256": sha256_of(f)}
                                                        for f in files]}
        if entry and entry.get("_trace_ids"):
            rec["trace_ids"] = list(entry["_trace_ids"])
        out.append(rec)
    return out


def _entry_for_file(file: Path) -> dict | None:
    """A dataset named by its path: the entry of the dataset_info.json beside it that names the same file."""
    from athanor.data.registry import read_registry

    for entry in read_registry(file.parent).values():
        if isinstance(entry, dict) and entry.get("file_name") == file.name:
            return entry
    return None


def record_training(cfg, out: Path) -> Path:
    """Write out/lineage.json for a finished run of `cfg` (a TrainConfig)."""
    keys = cfg.model_dump(mode="json", exclude_unset=True)  # what the YAML and the overrides set
    record = {"kind": "train", "created_at": _now(), "stage": cfg.stage, "finetuning_type": cfg.finetuning_type,
              "base": base_record(cfg.model_name_or_path), "config": keys,
              "datasets": dataset_records(cfg.dataset, cfg.dataset_dir),
              "eval_datasets": dataset_records(cfg.eval_dataset, cfg.dataset_dir) if cfg.eval_dataset else []}
    return write_lineage(out, record)


def record_export(base: str, adapters: list[str], out: Path, fmt: str, detail: dict[str, Any]) -> Path:
    """Write the lineage of an export: its base and each merged adapter (with the adapter's own lineage)."""
    merged = [{"path": a, "digest": sha256_of(a), "lineage": read_lineage(a)} for a in adapters]
    record = {"kind": "export", "created_at": _now(), "format": fmt, **detail, "base": base_record(base),
              "adapters": merged}
    return write_lineage(out, record)
