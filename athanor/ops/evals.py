"""`athanor eval MODEL DATA.jsonl`: run a model over OpenAI-evals-style items, score each reply, store the run.

    {"input": [{"role": "user", "content": "Capital of France?"}], "ideal": "Paris"}
    {"prompt": "2+2=", "ideal": ["4", "four"]}                 (aliases: "messages" for input, "answer" for ideal)
    {"input": [...], "tools": [...], "ideal": {"name": "add", "arguments": {"a": 1}}}     (the tool-call scorer)

Greedy by default (temperature 0). Every item is submitted at once from a thread pool, so a local model's
requests meet in the engine's batch (LocalChatModel sends each to the registry's shared engine). Each item runs
inside a root tracing span of kind `eval` (the model's own span nests under it), so its trace id is recorded;
after scoring, each verdict is attached to its trace as feedback (score 1 / -1, source `eval:<run_id>`) and,
for held-out evals, the traces are marked held out so dataset export skips them. The run (model digest, data
sha256, scorer, options, per-item results, timing) goes to evals.sqlite (eval_store.py).
Reuse: `load_items`, `score_items` and `wilson` are the pieces a recipe needs without the rest.
Not for: lm-eval tasks (llm/lm_eval_backend.py, run from eval_cli.py), comparing runs (compare.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from athanor import tracing
from athanor.file_hash import file_sha256
from athanor.ops.eval_store import EvalStore, input_hash, new_run_id
from athanor.ops.scorers import Reply, Verdict, get_scorer

DEFAULT_CONCURRENCY = 64  # requests in flight at once; the engine batches what its KV cache holds


@dataclasses.dataclass
class EvalItem:
    index: int
    messages: list[dict]
    ideal: Any
    tools: list[dict] | None = None

    @property
    def input(self) -> Any:
        return self.messages if not self.tools else {"messages": self.messages, "tools": self.tools}

    @property
    def question(self) -> str:
        users = [m.get("content") or "" for m in self.messages if m.get("role") == "user"]
        return users[-1] if users else ""


# --- data ---------------------------------------------------------------------------------------------------


def _messages(raw: Any, where: str) -> list[dict]:
    if isinstance(raw, str):
        return [{"role": "user", "content": raw}]
    if isinstance(raw, list) and raw and all(isinstance(m, dict) and "role" in m for m in raw):
        return raw
    raise ValueError(f"{where}: input must be a string or a non-empty list of {{'role', 'content'}} messages")


def parse_item(record: Any, index: int, where: str = "") -> EvalItem:
    """One JSONL record -> EvalItem (input|prompt|messages, ideal|answer, optional tools)."""
    where = where or f"item {index}"
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object")
    raw = next((record[k] for k in ("input", "prompt", "messages") if k in record), None)
    if raw is None:
        raise ValueError(f"{where}: no input (give 'input', 'prompt' or 'messages')")
    if "ideal" not in record and "answer" not in record:
        raise ValueError(f"{where}: no ideal answer (give 'ideal' or 'answer')")
    ideal = record["ideal"] if "ideal" in record else record["answer"]
    tools = record.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise ValueError(f"{where}: tools must be a list of OpenAI tool definitions")
    return EvalItem(index, _messages(raw, where), ideal, tools or None)


def load_items(path: str | Path, limit: int | None = None) -> list[EvalItem]:
    """Items of a JSONL file (blank lines skipped), the first `limit` when given."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    items: list[EvalItem] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        if limit is not None and len(items) >= limit:
            break
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{lineno}: not JSON ({e.msg})") from None
        items.append(parse_item(record, len(items), f"{path.name}:{lineno}"))
    if not items:
        raise ValueError(f"{path}: no items")
    return items


_DIGESTS: dict[tuple, str] = {}


def _tree_sha256(path: Path) -> str:
    """sha256 of a file, or of a folder's files (names and contents, sorted); cached by size and mtime."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    key = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        for p in files:
            h.update(str(p.relative_to(path) if path.is_dir() else p.name).encode() + b"\0")
            h.update(file_sha256(p).encode())
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def model_digest(name: str) -> str | None:
    """'sha256:...' of what the store name (or path) means: weights, adapters, template, system, parameters.
    None when it is not a local model (a remote `openai:` spec)."""
    from athanor.errors import AthanorError
    from athanor.models.store import Store

    if name.startswith("openai:"):
        return None
    try:
        m = Store().resolve(name.removeprefix("local:"))
    except AthanorError:
        return None
    parts = {"weights": _tree_sha256(Path(m.weights)), "adapters": [_tree_sha256(Path(a)) for a in m.adapters],
             "template": m.template, "system": m.system, "parameters": m.parameters, "messages": m.messages}
    return "sha256:" + hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


# --- statistics ---------------------------------------------------------------------------------------------


def wilson(correct: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for a proportion (95% by default); (0, 1) when n is 0."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


# --- scoring ------------------------------------------------------------------------------------------------


def reply_of(response) -> Reply:
    """A ChatResponse -> Reply (tool calls as {"name", "arguments"})."""
    calls = [{"name": c.name, "arguments": c.arguments} for c in response.tool_calls]
    return Reply(response.text, calls)


def score_one(scorer, item: EvalItem, reply: Reply, ignore_case: bool = False) -> Verdict:
    if getattr(scorer, "needs_question", False):
        return scorer(reply, item.ideal, ignore_case, question=item.question)
    return scorer(reply, item.ideal, ignore_case)


def score_items(items: list[EvalItem], replies: list[Reply | str], scorer: str = "exact",
                ignore_case: bool = False) -> list[Verdict]:
    """Verdicts for replies already produced (a str is a text-only reply), in item order."""
    fn = get_scorer(scorer)
    return [score_one(fn, it, r if isinstance(r, Reply) else Reply(r), ignore_case) for it, r in zip(items, replies)]


def _output_text(reply: Reply) -> str:
    if not reply.tool_calls:
        return reply.text
    return json.dumps({"content": reply.text, "tool_calls": reply.tool_calls}, ensure_ascii=False)


def _run_item(chat_model, item: EvalItem, scorer, options: dict, ignore_case: bool, run_id: str) -> dict:
    """Generate and score one item inside its own root `eval` span (a worker thread has no current span)."""
    t0 = time.perf_counter()
    attrs = {"athanor.eval.run_id": run_id, "athanor.eval.index": item.index, tracing.REQUEST_MODEL: chat_model.name}
    with tracing.span(f"eval {run_id} #{item.index}", "eval", **attrs) as s:
        s.set_content(input=item.messages)
        try:
            reply = reply_of(chat_model.chat(item.messages, tools=item.tools, **options))
            verdict = score_one(scorer, item, reply, ignore_case)
            error = None
        except ValueError:
            raise  # a bad item or scorer spec: the user's to fix, stop the run
        except Exception as e:  # noqa: BLE001 - one failed request is one wrong item, with its reason
            s.fail(e)
            reply, verdict, error = Reply(""), Verdict(False, f"error: {type(e).__name__}: {e}"), str(e)
        s.set_content(output=_output_text(reply))
        s.set("athanor.eval.correct", verdict.correct)
    return {"index": item.index, "input": item.input, "input_hash": input_hash(item.input), "ideal": item.ideal,
            "output": _output_text(reply), "correct": verdict.correct, "detail": verdict.detail,
            "trace_id": s.trace_id if s.recorded else None, "held_out": False, "latency":
            round(time.perf_counter() - t0, 6), "error": error}


def run_items(chat_model, items: list[EvalItem], scorer: str = "exact", *, options: dict | None = None,
              ignore_case: bool = False, run_id: str = "", concurrency: int = DEFAULT_CONCURRENCY,
              load_judge=None) -> list[dict]:
    """Every item submitted at once (up to `concurrency` in flight), scored; per-item dicts in item order."""
    fn = get_scorer(scorer, load_judge)
    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(items)))) as pool:
        futures = [pool.submit(_run_item, chat_model, it, fn, options or {}, ignore_case, run_id) for it in items]
        return [f.result() for f in futures]


# --- traces -------------------------------------------------------------------------------------------------


def attach_feedback(store, run_id: str, items: list[dict], held_out: bool = False) -> int:
    """Each item's verdict as feedback on its trace (1 / -1, source eval:<run_id>); -> how many landed."""
    landed = 0
    for it in items:
        if not it.get("trace_id"):
            continue
        try:
            store.add_feedback(it["trace_id"], 1.0 if it["correct"] else -1.0, comment=it.get("detail"),
                               source=f"eval:{run_id}")
            landed += 1
        except KeyError:  # the trace was not written (pruned, or another tracer): nothing to attach to
            it["trace_id"] = None
    if held_out:
        ids = [it["trace_id"] for it in items if it.get("trace_id")]
        store.set_held_out(ids)
        for it in items:
            it["held_out"] = bool(it.get("trace_id"))
    return landed


def _trace_store():
    """The installed tracer's store after flushing it (None when the tracer keeps no store)."""
    tracer = tracing.installed()
    if tracer is None:
        return None
    if hasattr(tracer, "flush"):
        tracer.flush()
    return getattr(tracer, "store", None)


# --- the run ------------------------------------------------------------------------------------------------


def run_eval(model: str, data: str | Path, scorer: str = "exact", *, chat_model=None, limit: int | None = None,
             max_tokens: int = 256, options: dict | None = None, ignore_case: bool = False, held_out: bool = False,
             trace: bool = True, store: EvalStore | None = None, concurrency: int = DEFAULT_CONCURRENCY) -> dict:
    """Evaluate `model` (a model spec, or `chat_model` when given) on the JSONL file `data`; store and return the
    run: run_id, model, model_digest, n, correct, accuracy, ci_low, ci_high, items, ... (eval_store columns).

    Tracing: when no tracer is installed and `trace`, tracing is started (SQLite under ATHANOR_HOME) for the run."""
    items = load_items(data, limit)
    get_scorer(scorer, load_model=lambda name: None)  # an unknown scorer fails before any model loads
    options = {"temperature": 0, "max_tokens": max_tokens} | dict(options or {})
    started = None
    if trace and tracing.installed() is None:
        from athanor.ops.tracing_setup import start_tracing

        started = start_tracing()
    try:
        if chat_model is None:
            from athanor.llm import load_chat_model

            chat_model = load_chat_model(model)
        run_id, created, t0 = new_run_id(), time.time(), time.perf_counter()
        results = run_items(chat_model, items, scorer, options=options, ignore_case=ignore_case, run_id=run_id,
                            concurrency=concurrency)
        duration = time.perf_counter() - t0
        trace_store = _trace_store()
        if trace_store is not None:
            attach_feedback(trace_store, run_id, results, held_out)
        else:
            for it in results:
                it["trace_id"] = None
    finally:
        if started is not None:
            started.stop()
    run = _summary(run_id, model or chat_model.name, data, scorer, options, results, created, duration, held_out)
    run["model_digest"] = model_digest(model) if model else None
    run["options"] = options | ({"ignore_case": True} if ignore_case else {})
    own = store is None
    store = store or EvalStore()
    try:
        store.save(run)
    finally:
        if own:
            store.close()
    return run


def _summary(run_id, model, data, scorer, options, items, created, duration, held_out) -> dict:
    n, correct = len(items), sum(1 for it in items if it["correct"])
    lo, hi = wilson(correct, n)
    return {"run_id": run_id, "kind": "items", "model": model, "model_digest": None, "data": str(Path(data).resolve()),
            "data_sha256": file_sha256(data), "scorer": scorer, "options": options, "n": n, "correct": correct,
            "accuracy": correct / n, "ci_low": lo, "ci_high": hi, "held_out": held_out, "created": created,
            "duration": duration, "meta": {"errors": sum(1 for it in items if it.get("error"))}, "items": items}


def load_run(run_id: str, store: EvalStore | None = None) -> dict:
    """A stored run (same shape as run_eval's); KeyError when unknown."""
    own = store is None
    store = store or EvalStore()
    try:
        run = store.get(run_id)
    finally:
        if own:
            store.close()
    if run is None:
        raise KeyError(run_id)
    return run


# --- lm-evaluation-harness tasks ----------------------------------------------------------------------------


def run_lm_eval(model: str, tasks: list[str], *, limit: int | None = None, include_path: str | None = None,
                store: EvalStore | None = None) -> list[dict]:
    """lm-eval `tasks` on `model` in-process (llm/lm_eval_backend.py); one stored run per task, its documents as
    items (correct = the task's first metric is 1 for that document), so `eval compare` pairs them too."""
    from athanor.llm.lm_eval_backend import evaluate

    created, t0 = time.time(), time.perf_counter()
    out = evaluate(model, tasks, limit=limit, include_path=include_path)
    duration = time.perf_counter() - t0
    digest = model_digest(model)
    runs = [_lm_eval_run(task, out, model, digest, created, duration, limit) for task in out["results"]
            if task in out.get("samples", {})]
    own = store is None
    store = store or EvalStore()
    try:
        for run in runs:
            store.save(run)
    finally:
        if own:
            store.close()
    return runs


def _primary_metric(result: dict) -> str:
    names = [k.split(",")[0] for k, v in result.items() if "," in k and "_stderr" not in k
             and isinstance(v, (int, float))]
    for preferred in ("acc", "exact_match", "acc_norm"):
        if preferred in names:
            return preferred
    if not names:
        raise ValueError("the lm-eval result has no numeric metric to store")
    return names[0]


def _lm_eval_output(sample: dict) -> str:
    resps = sample.get("filtered_resps") or sample.get("resps") or []
    if resps and isinstance(resps[0], (list, tuple)) and resps[0] and isinstance(resps[0][0], float):
        best = max(range(len(resps)), key=lambda i: resps[i][0])  # loglikelihood: the most likely choice
        return str(sample["arguments"][best][1])
    return str(resps[0] if resps else "")


def _lm_eval_run(task: str, out: dict, model: str, digest, created: float, duration: float, limit) -> dict:
    result, samples = out["results"][task], sorted(out["samples"][task], key=lambda s: s["doc_id"])
    metric = _primary_metric(result)
    items = []
    for s in samples:
        context = s["arguments"][0][0] if s.get("arguments") else ""
        items.append({"index": s["doc_id"], "input": context, "input_hash": input_hash(context),
                      "ideal": s.get("target"), "output": _lm_eval_output(s), "correct": float(s.get(metric, 0)) >= 1,
                      "detail": f"{metric}={s.get(metric)}", "trace_id": None, "held_out": False, "latency": None})
    n, correct = len(items), sum(1 for it in items if it["correct"])
    lo, hi = wilson(correct, n)
    doc_hashes = "".join(s.get("doc_hash", "") for s in samples)
    return {"run_id": new_run_id(), "kind": "lm-eval", "model": model, "model_digest": digest, "data": task,
            "data_sha256": hashlib.sha256(doc_hashes.encode()).hexdigest(), "scorer": f"lm-eval:{metric}",
            "options": {"limit": limit}, "n": n, "correct": correct, "accuracy": correct / n if n else 0.0,
            "ci_low": lo, "ci_high": hi, "held_out": False, "created": created, "duration": duration,
            "meta": {"metric": metric, "lm_eval_value": result.get(f"{metric},none"),
                     "lm_eval_stderr": result.get(f"{metric}_stderr,none"), "lm_eval_results": result},
            "items": items}
