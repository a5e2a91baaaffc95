"""`athanor promote NEW --over OLD --eval DATA.jsonl`: evaluate both, refuse a regression, move the serving alias.

Both models run the same eval (evals.run_eval, greedy); compare.compare_runs pairs the items. When NEW is worse
than OLD beyond noise (McNemar p < 0.05 and a lower score) the promotion is refused with the numbers; otherwise the
alias (models/store.py: a name that follows its target, read on every request) points at NEW. A running
`athanor serve` answers the alias from NEW on its next request; OLD stays loaded until idle eviction.

Which alias: `--alias NAME` when given; else OLD itself when OLD is an alias (`promote new --over prod` evaluates
what prod serves now and moves prod); else "prod". Every promotion (and refusal) is appended to
`$ATHANOR_HOME/promotions.jsonl`, which lineage.py shows.
Not for: running evals (evals.py) or the statistics (compare.py).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from athanor.errors import AthanorError

DEFAULT_ALIAS = "prod"
LOG_FILE = "promotions.jsonl"


class PromotionRefused(AthanorError):
    """NEW scored worse than OLD beyond noise; `.record` holds the numbers."""

    def __init__(self, message: str, record: dict) -> None:
        super().__init__(message)
        self.record = record


def pick_alias(store, old: str, alias: str | None) -> str:
    from athanor.models.store import normalize_name

    if alias:
        return normalize_name(alias)
    full = normalize_name(old)
    return full if full in store.aliases() else normalize_name(DEFAULT_ALIAS)


def promote(new: str, over: str, data: str | Path, scorer: str = "exact", *, alias: str | None = None,
            store=None, limit: int | None = None, max_tokens: int = 256, run_eval=None) -> dict:
    """Evaluate OLD (`over`) and NEW on `data`; raise PromotionRefused when NEW is worse, else point the alias at
    NEW. Returns the promotion record (also appended to promotions.jsonl)."""
    from athanor.models.store import Store, short_name

    if run_eval is None:
        from athanor.ops.evals import run_eval
    store = store or Store()
    target = pick_alias(store, over, alias)
    old_model, new_model = store.get(over).name, store.get(new).name  # unknown names fail before any eval
    if old_model == new_model:
        raise AthanorError(f"{new!r} and {over!r} are the same model ({short_name(new_model)}); nothing to promote")
    # held_out: the gate's items are test data; their traces are marked so dataset export never trains on them
    runs = {"old": run_eval(old_model, data, scorer, limit=limit, max_tokens=max_tokens, held_out=True),
            "new": run_eval(new_model, data, scorer, limit=limit, max_tokens=max_tokens, held_out=True)}
    return decide(store, target, old_model, new_model, runs["old"], runs["new"], str(Path(data).resolve()), scorer)


def promote_runs(old_run: dict, new_run: dict, *, alias: str | None = None, store=None) -> dict:
    """The same decision from two stored eval runs (the console's compare view: B over A): refuse when B's model is
    worse beyond noise, else point the alias at it. The runs must be of two different models on the same data."""
    from athanor.models.store import Store

    store = store or Store()
    if old_run.get("data_sha256") and new_run.get("data_sha256") and old_run["data_sha256"] != new_run["data_sha256"]:
        raise AthanorError("the two runs used different data files; promote from runs of the same eval data")
    old_model, new_model = store.get(old_run["model"]).name, store.get(new_run["model"]).name
    if old_model == new_model:
        raise AthanorError("both runs are of the same model; nothing to promote")
    target = pick_alias(store, old_run["model"], alias)
    return decide(store, target, old_model, new_model, old_run, new_run, new_run.get("data"), new_run.get("scorer"))


def decide(store, target: str, old_model: str, new_model: str, old_run: dict, new_run: dict, data, scorer) -> dict:
    """Compare the paired runs; log and raise PromotionRefused when NEW is worse beyond noise, else move `target`."""
    from athanor.models.store import short_name
    from athanor.ops.compare import compare_runs
    from athanor.ops.evals import model_digest

    cmp = compare_runs(old_run, new_run)
    record = {"at": time.time(), "alias": target, "new": new_model, "old": old_model,
              "new_digest": model_digest(new_model), "old_digest": model_digest(old_model),
              "eval": {"data": data, "scorer": scorer, "old_run": old_run["run_id"],
                       "new_run": new_run["run_id"], "n": cmp["n_paired"], "old_accuracy": cmp["a_accuracy"],
                       "new_accuracy": cmp["b_accuracy"], "diff": cmp["diff"], "p_value": cmp["p_value"],
                       "ci_low": cmp["ci_low"], "ci_high": cmp["ci_high"]}}
    if cmp["worse"]:
        record["status"] = "refused"
        _log(store, record)
        raise PromotionRefused(f"refused: {short_name(new_model)} is worse than {short_name(old_model)} beyond "
                               f"noise: {summary(record)}", record)
    record["previous_target"] = store.set_alias(target, new_model)
    record["status"] = "promoted"
    _log(store, record)
    return record


def summary(record: dict) -> str:
    e = record["eval"]
    return (f"accuracy {e['new_accuracy']:.1%} vs {e['old_accuracy']:.1%} on {e['n']} items "
            f"(diff {e['diff']:+.1%}, 95% CI {e['ci_low']:+.1%}..{e['ci_high']:+.1%}, p={e['p_value']:.3g})")


def _log(store, record: dict) -> None:
    store.home.mkdir(parents=True, exist_ok=True)
    with open(store.home / LOG_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, default=str) + "\n")


def promotions(store, model: str | None = None) -> list[dict]:
    """Logged promotions (oldest first); with `model`, those where it was the new or the old model."""
    path = store.home / LOG_FILE
    if not path.is_file():
        return []
    out: list[dict[str, Any]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a crash: the others still count
        if model is None or model in (rec.get("new"), rec.get("old")):
            out.append(rec)
    return out
