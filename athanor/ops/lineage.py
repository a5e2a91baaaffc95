"""`athanor show MODEL --lineage`: where a model came from and what was measured on it, as one dict or a chain.

Gathers: the manifest's `lineage` (written when the model was created from a training run's adapter or export:
base with digest, adapters, training config keys, dataset files with sha256 and the traces they came from), the
model's digest now, the eval runs that name the model or its digest (`$ATHANOR_HOME/evals.sqlite`, opened
read-only, only when it exists), the promotions it took part in (promote.py's log) and the aliases that point at it.
Not for: writing lineage (train/lineage.py and models/store.py do, when a model is made).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any


def model_lineage(name: str, store=None) -> dict[str, Any]:
    from athanor.models.store import Store, short_name
    from athanor.ops.evals import model_digest
    from athanor.ops.promote import promotions

    store = store or Store()
    m = store.get(name)
    digest = model_digest(m.name)
    return {"name": m.name, "weights": m.weights, "format": m.format, "digest": digest, "adapters": m.adapters,
            "parent": m.parent, "created_at": m.created_at, "built": m.lineage,
            "aliases": sorted(short_name(a) for a, t in store.aliases().items() if t == m.name),
            "evals": eval_runs(store.home / "evals.sqlite", [m.name, short_name(m.name)], digest),
            "promotions": promotions(store, m.name)}


def eval_runs(path: Path, names: list[str], digest: str | None) -> list[dict]:
    """Run summaries naming the model or its digest, oldest first; [] when there is no evals database."""
    if not path.is_file():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        db.row_factory = sqlite3.Row
        marks = ",".join("?" * len(names))
        rows = db.execute(f"SELECT run_id, model, model_digest, data, data_sha256, scorer, n, correct, accuracy, "
                          f"ci_low, ci_high, created FROM runs WHERE model IN ({marks}) OR (model_digest IS NOT NULL "
                          "AND model_digest=?) ORDER BY created", [*names, digest]).fetchall()
    except sqlite3.Error:
        return []  # an older or damaged database: lineage still shows the rest
    finally:
        db.close()
    return [dict(r) for r in rows]


# --- the printed chain ---------------------------------------------------------------------------------------


def format_lineage(info: dict) -> str:
    lines = [f"{info['name']}  {info.get('digest') or ''}".rstrip(), f"  weights   {info['weights']} ({info['format']})"]
    for a in info.get("adapters") or []:
        lines.append(f"  adapter   {a}")
    if info.get("aliases"):
        lines.append(f"  aliases   {', '.join(info['aliases'])}")
    built = info.get("built") or {}
    if built:
        lines += ["", "  Built from"] + _built(built, "    ")
    elif info.get("parent"):
        lines += ["", "  Built from", f"    {info['parent']} (no training record)"]
    if info.get("evals"):
        lines += ["", "  Evals"]
        for r in info["evals"]:
            lines.append(f"    {r['run_id']}  {r['accuracy']:.1%} ({r['correct']}/{r['n']}, 95% CI "
                         f"{r['ci_low']:.1%}..{r['ci_high']:.1%})  {r['scorer']}  {Path(r['data'] or '').name}")
    if info.get("promotions"):
        lines += ["", "  Promotions"]
        for p in info["promotions"]:
            e = p.get("eval", {})
            lines.append(f"    {p.get('status')}: {p.get('new')} over {p.get('old')} as {p.get('alias')}  "
                         f"{e.get('new_accuracy', 0):.1%} vs {e.get('old_accuracy', 0):.1%} on {e.get('n')} items "
                         f"(p={e.get('p_value', 1):.3g}; runs {e.get('new_run')}, {e.get('old_run')})")
    return "\n".join(lines)


def _built(rec: dict, pad: str) -> list[str]:
    """One record of train/lineage.py or models/store.py, nested records indented under it."""
    out: list[str] = []
    if "from" in rec:
        out.append(f"{pad}model {rec['from']['name']}")
        out += _built(rec["from"].get("lineage") or {}, pad + "  ")
    if "weights" in rec:
        out += _built(rec["weights"], pad)
    kind = rec.get("kind")
    if kind == "export":
        out.append(f"{pad}export ({rec.get('format')}) {rec.get('created_at', '')}")
    elif kind == "train":
        out.append(f"{pad}train stage={rec.get('stage')} method={rec.get('finetuning_type')} "
                   f"{rec.get('created_at', '')}")
        keys = {k: v for k, v in (rec.get("config") or {}).items() if k not in ("dataset", "dataset_dir")}
        out.append(f"{pad}  config {json.dumps(keys, default=str)}")
        for d in rec.get("datasets") or []:
            for f in d.get("files") or []:
                out.append(f"{pad}  dataset {d['name']}: {f['path']} {f['sha256'][:19]}")
            if d.get("trace_ids"):
                ids = d["trace_ids"]
                out.append(f"{pad}    from {len(ids)} traces: {', '.join(ids[:3])}{' ...' if len(ids) > 3 else ''}")
    if "base" in rec:
        b = rec["base"]
        out.append(f"{pad}  base {b.get('name')} {b.get('digest', '')[:19]}")
        out += _built(b.get("lineage") or {}, pad + "    ")
    for a in rec.get("adapters") or []:
        if isinstance(a, dict):
            out.append(f"{pad}  adapter {a.get('path')} {str(a.get('digest') or '')[:19]}")
            out += _built(a.get("lineage") or {}, pad + "    ")
    return out
