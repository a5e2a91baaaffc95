"""`athanor eval …`: the typer sub-app mounted by athanor/cli.py (`register(app)`). Parse → call → print.

    eval MODEL DATA.jsonl [--scorer S] [--limit N] [--max-tokens N] [-o k=v] [--held-out] [--json]
                                      OpenAI-evals-style items (ops/evals.py); accuracy with a 95% Wilson interval
    eval MODEL --tasks NAME[,..] [--limit N] [--include-path DIR]
                                      lm-evaluation-harness tasks in-process (llm/lm_eval_backend.py)
    eval compare RUN_A RUN_B [--gate] [--json] [--plot out.png]
                                      paired comparison (ops/compare.py); --gate exits 1 when B is worse
    eval runs [--json]                stored runs;   eval show RUN [--json]: one run with its items
`eval MODEL ...` is `eval run MODEL ...`: a first word that is not a subcommand means `run`.
Imports only typer at module level: `athanor --help` stays instant.
Not for: the logic (evals.py, compare.py, eval_store.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.core import TyperGroup


class _RunByDefault(TyperGroup):
    """A group whose first argument, when it names no subcommand, is the model of `run`."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


eval_app = typer.Typer(cls=_RunByDefault, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                       help="Evals: score a model on JSONL items or lm-eval tasks, list runs, compare two runs.")


def _echo_json(value) -> None:
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def _print_run(run: dict) -> None:
    typer.echo(f"run {run['run_id']}  model {run['model']}  {run['data']}  scorer {run['scorer']}")
    errors = (run.get("meta") or {}).get("errors")
    typer.echo(f"accuracy {run['accuracy']:.3f} ({run['correct']}/{run['n']}), 95% CI {run['ci_low']:.3f} .. "
               f"{run['ci_high']:.3f}" + (f"; {errors} item(s) failed with an error" if errors else "")
               + f"  [{run['duration']:.1f}s]")


@eval_app.command("run")
def run(
    model: str = typer.Argument(..., help="model spec: store name, .gguf / HF dir, or openai:URL#model"),
    data: Path | None = typer.Argument(None, help="JSONL items: {'input' | 'prompt', 'ideal'} per line"),
    scorer: str = typer.Option("exact", "--scorer", help="exact, match, contains, fuzzy, regex, json-schema, "
                                                         "tool-call or judge:MODEL"),
    limit: int | None = typer.Option(None, "--limit", help="only the first N items (or documents per task)"),
    max_tokens: int = typer.Option(256, "--max-tokens", help="reply length limit"),
    ignore_case: bool = typer.Option(False, "--ignore-case", help="exact/match/contains/regex ignore case"),
    held_out: bool = typer.Option(False, "--held-out", help="mark the items' traces held out: dataset export "
                                                              "skips them"),
    option: list[str] | None = typer.Option(None, "--option", "-o", help="sampling option KEY=VALUE "
                                               "(repeatable); greedy (temperature 0) unless given"),
    concurrency: int = typer.Option(64, "--concurrency", help="requests in flight at once"),
    no_trace: bool = typer.Option(False, "--no-trace", help="do not record traces (and so no feedback)"),
    tasks: str | None = typer.Option(None, "--tasks", help="lm-eval task names, comma-separated, instead of DATA"),
    include_path: Path | None = typer.Option(None, "--include-path", help="folder of local lm-eval task YAMLs"),
    as_json: bool = typer.Option(False, "--json", help="print the run(s) as JSON"),
) -> None:
    """Evaluate MODEL on DATA.jsonl (or on lm-eval --tasks) and store the run in ATHANOR_HOME/evals.sqlite."""
    from athanor.keyvalue import parse_pairs

    if (data is None) == (tasks is None):
        raise ValueError("give either DATA.jsonl or --tasks NAME[,..]")
    if tasks is not None:
        return _run_tasks(model, tasks, limit, include_path, as_json)
    from athanor.ops.evals import run_eval

    result = run_eval(model, data, scorer, limit=limit, max_tokens=max_tokens, options=parse_pairs(option, "option"),
                      ignore_case=ignore_case, held_out=held_out, trace=not no_trace, concurrency=concurrency)
    if as_json:
        return _echo_json(result)
    _print_run(result)


def _run_tasks(model: str, tasks: str, limit, include_path, as_json: bool) -> None:
    from athanor.ops.evals import run_lm_eval

    names = [t.strip() for t in tasks.split(",") if t.strip()]
    if not names:
        raise ValueError("--tasks needs at least one task name")
    runs = run_lm_eval(model, names, limit=limit, include_path=str(include_path) if include_path else None)
    if as_json:
        return _echo_json(runs)
    for r in runs:
        meta = r["meta"]
        typer.echo(f"{r['data']}: {meta['metric']} {meta['lm_eval_value']:.4f} (lm-eval stderr "
                   f"{meta['lm_eval_stderr'] or 0:.4f}); stored as {r['run_id']}, 95% CI {r['ci_low']:.3f} .. "
                   f"{r['ci_high']:.3f} over {r['n']} documents")


def _load(run_id: str) -> dict:
    from athanor.errors import AthanorError
    from athanor.ops.evals import load_run

    try:
        return load_run(run_id)
    except KeyError:
        raise AthanorError(f"no eval run {run_id!r}; `athanor eval runs` lists them") from None


@eval_app.command("compare")
def compare(
    run_a: str = typer.Argument(..., help="the baseline run id"),
    run_b: str = typer.Argument(..., help="the candidate run id"),
    gate: bool = typer.Option(False, "--gate", help="exit 1 when B is worse than A beyond noise"),
    as_json: bool = typer.Option(False, "--json", help="print the comparison as JSON"),
    plot: Path | None = typer.Option(None, "--plot", help="write a bar chart with 95% CIs (PNG)"),
) -> None:
    """Paired comparison of two runs: B - A with a bootstrap CI and an exact McNemar test."""
    from athanor.ops import compare as cmp

    result = cmp.compare_runs(_load(run_a), _load(run_b))
    if as_json:
        _echo_json(result)
    else:
        typer.echo(cmp.format_report(result))
    if plot is not None:
        typer.echo(f"wrote {cmp.plot(result, str(plot))}", err=as_json)
    if gate and result["worse"]:
        raise typer.Exit(1)


@eval_app.command("runs")
def runs(
    limit: int = typer.Option(50, "--limit", help="newest N runs"),
    model: str | None = typer.Option(None, "--model", help="only runs of this model"),
    as_json: bool = typer.Option(False, "--json", help="print as JSON"),
) -> None:
    """Stored eval runs, newest first."""
    from athanor.ops.eval_store import EvalStore

    with EvalStore() as store:
        rows = store.list(limit=limit, model=model)
    if as_json:
        return _echo_json(rows)
    if not rows:
        typer.echo("no eval runs yet")
    for r in rows:
        typer.echo(f"{r['run_id']}  {r['kind']:7}  {r['model'][:24]:24}  {r['scorer'][:16]:16}  "
                   f"{r['accuracy']:.3f} ({r['correct']}/{r['n']})  {Path(str(r['data'])).name}")


@eval_app.command("show")
def show(run_id: str = typer.Argument(...), as_json: bool = typer.Option(False, "--json")) -> None:
    """One run with its items."""
    r = _load(run_id)
    if as_json:
        return _echo_json(r)
    _print_run(r)
    for it in r["items"]:
        typer.echo(f"  {it['index']:>4}  {'right' if it['correct'] else 'wrong'}  {it['detail']}")


def register(app: typer.Typer) -> None:
    app.add_typer(eval_app, name="eval")
