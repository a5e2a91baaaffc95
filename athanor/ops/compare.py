"""`athanor eval compare RUN_A RUN_B`: is B better or worse than A on the same items, beyond noise?

Items are paired by (index, input hash), so only questions both runs answered count. On the pairs: the
difference in accuracy (B - A) with a paired bootstrap 95% interval (resampling the pairs, seeded: the same
runs give the same interval), and an exact McNemar test — a two-sided binomial test of the discordant pairs
(A right/B wrong against A wrong/B right) at p = 1/2. B is *worse* when p < alpha and the difference is
negative, *better* when p < alpha and positive; `--gate` turns "worse" into exit status 1.
Not for: running evals (evals.py) or storing them (eval_store.py).
"""

from __future__ import annotations

import math
import random

ALPHA = 0.05
BOOTSTRAP_SAMPLES = 2000


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: b and c are the two kinds of discordant pairs; 1.0 when there are none."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def bootstrap_ci(a: list[int], b: list[int], samples: int = BOOTSTRAP_SAMPLES, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of mean(b) - mean(a) over paired resamples of (a[i], b[i])."""
    n = len(a)
    if n == 0:
        return 0.0, 0.0
    rng = random.Random(seed)
    deltas = [bi - ai for ai, bi in zip(a, b)]
    diffs = sorted(sum(deltas[rng.randrange(n)] for _ in range(n)) / n for _ in range(samples))
    lo = diffs[int(math.floor((1 - level) / 2 * (samples - 1)))]
    hi = diffs[int(math.ceil((1 + level) / 2 * (samples - 1)))]
    return lo, hi


def pair_items(a: dict, b: dict) -> list[tuple[dict, dict]]:
    """(item of A, item of B) for each item present in both runs, matched by index and input hash."""
    def key(it: dict) -> tuple:
        return it["index"], it.get("input_hash")

    theirs = {key(it): it for it in b.get("items", [])}
    return [(it, theirs[key(it)]) for it in a.get("items", []) if key(it) in theirs]


def _summary(run: dict) -> dict:
    return {k: run.get(k) for k in ("run_id", "model", "model_digest", "scorer", "n", "correct", "accuracy", "ci_low",
                                    "ci_high", "data_sha256")}


def compare_runs(a: dict, b: dict, alpha: float = ALPHA, samples: int = BOOTSTRAP_SAMPLES) -> dict:
    """Paired comparison of two run dicts (as run_eval / load_run give them); B - A."""
    pairs = pair_items(a, b)
    ca = [int(x["correct"]) for x, _ in pairs]
    cb = [int(y["correct"]) for _, y in pairs]
    n = len(pairs)
    only_a = sum(1 for x, y in zip(ca, cb) if x and not y)  # A right, B wrong
    only_b = sum(1 for x, y in zip(ca, cb) if y and not x)
    diff = (sum(cb) - sum(ca)) / n if n else 0.0
    p = mcnemar_exact(only_a, only_b)
    lo, hi = bootstrap_ci(ca, cb, samples)
    items = [{"index": x["index"], "input": x.get("input"), "ideal": x.get("ideal"), "a_output": x.get("output"),
              "b_output": y.get("output"), "a_correct": bool(x["correct"]), "b_correct": bool(y["correct"]),
              "changed": bool(x["correct"]) != bool(y["correct"]), "a_trace_id": x.get("trace_id"),
              "b_trace_id": y.get("trace_id")} for x, y in pairs]
    return {"a": _summary(a), "b": _summary(b), "n_paired": n, "a_accuracy": sum(ca) / n if n else 0.0,
            "b_accuracy": sum(cb) / n if n else 0.0, "diff": diff, "ci_low": lo, "ci_high": hi, "p_value": p,
            "only_a_correct": only_a, "only_b_correct": only_b, "alpha": alpha,
            "worse": n > 0 and p < alpha and diff < 0, "better": n > 0 and p < alpha and diff > 0,
            "same_data": a.get("data_sha256") == b.get("data_sha256"), "items": items}


def format_report(result: dict, max_rows: int = 20) -> str:
    """The text `athanor eval compare` prints: the two runs, the difference and the changed items."""
    a, b = result["a"], result["b"]
    lines = [f"A {a['run_id']}  {a['model']}  {result['a_accuracy']:.3f}",
             f"B {b['run_id']}  {b['model']}  {result['b_accuracy']:.3f}",
             f"paired items {result['n_paired']}: B - A = {result['diff']:+.3f} "
             f"(95% CI {result['ci_low']:+.3f} .. {result['ci_high']:+.3f}), McNemar p = {result['p_value']:.4g} "
             f"({result['only_a_correct']} only A right, {result['only_b_correct']} only B right)"]
    verdict = "B is WORSE than A" if result["worse"] else "B is BETTER than A" if result["better"] else \
        "no difference beyond noise"
    lines.append(f"verdict: {verdict} (alpha {result['alpha']})")
    if not result["same_data"]:
        lines.append("note: the runs used different data files; only items with the same index and input count")
    changed = [it for it in result["items"] if it["changed"]]
    if changed:
        lines.append(f"changed items ({len(changed)}):")
        lines.append(f"  {'#':>4}  {'A':5} {'B':5}  input / A output / B output")
        for it in changed[:max_rows]:
            lines.append(f"  {it['index']:>4}  {_mark(it['a_correct']):5} {_mark(it['b_correct']):5}  "
                         f"{_short(_question(it['input']))} / {_short(it['a_output'])} / {_short(it['b_output'])}")
        if len(changed) > max_rows:
            lines.append(f"  ... {len(changed) - max_rows} more (--json shows all)")
    return "\n".join(lines)


def _mark(ok: bool) -> str:
    return "right" if ok else "wrong"


def _question(inp) -> str:
    if isinstance(inp, dict):
        inp = inp.get("messages", inp)
    if isinstance(inp, list) and inp:
        return str(inp[-1].get("content", "")) if isinstance(inp[-1], dict) else str(inp[-1])
    return str(inp)


def _short(text, n: int = 28) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= n else text[: n - 3] + "..."


def plot(result: dict, out: str) -> str:
    """Bar chart of both runs' paired accuracy with Wilson 95% intervals (matplotlib) written to `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from athanor.ops.evals import wilson

    n = result["n_paired"]
    accs = [result["a_accuracy"], result["b_accuracy"]]
    cis = [wilson(round(acc * n), n) for acc in accs]
    err = [[acc - lo for acc, (lo, _) in zip(accs, cis)], [hi - acc for acc, (_, hi) in zip(accs, cis)]]
    labels = [f"A {result['a']['model']}\n{result['a']['run_id']}", f"B {result['b']['model']}\n{result['b']['run_id']}"]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar(labels, accs, yerr=err, capsize=8, color=["#8aa", "#a86" if result["worse"] else "#6a8"])
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"accuracy on {n} paired items (95% CI)")
    ax.set_title(f"B - A = {result['diff']:+.3f}, McNemar p = {result['p_value']:.3g}")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
