"""`athanor traces export --format sft|dpo [filters] -o FILE.jsonl`: training data from rated and corrected traces.

Writes LLaMA-Factory sharegpt JSON Lines plus its entry in dataset_info.json beside the file, so a training YAML
names it (`dataset: NAME`, `dataset_dir: DIR`) or points at the file itself. `register(traces_app)` adds the
command to the `traces` sub-app; `mount(app)` finds that sub-app (athanor.ops.cli.traces_app) or, where it does
not exist, makes one. Imports only typer at module level: `athanor --help` stays instant.
Not for: how records are made (datasets.py).
"""

from __future__ import annotations

from pathlib import Path

import typer


def export(
    out: Path = typer.Option(..., "-o", "--out", help="the .jsonl file to write (dataset_info.json goes beside it)"),
    format: str = typer.Option("sft", "--format", help="sft (good or corrected traces) or dpo (correction = chosen, "
                               "the model's answer = rejected)"),
    model: str | None = typer.Option(None, "--model", help="only traces of this model"),
    since: str | None = typer.Option(None, "--since", help="only traces this recent: seconds or 30m, 1h, 2d"),
    feedback: str = typer.Option("any", "--feedback", help="good, bad or any (traces without feedback never "
                                 "become training data)"),
    errors: bool = typer.Option(False, "--errors", help="only traces that ended in an error"),
    name: str | None = typer.Option(None, "--name", help="dataset_info.json name (default: the file's stem)"),
    trace_id: list[str] | None = typer.Option(None, "--trace-id", help="export these traces (repeatable)"),
    home: Path | None = typer.Option(None, "--db", help="traces database (default $ATHANOR_HOME/traces.sqlite)"),
) -> None:
    """Write the traces' conversations as LLaMA-Factory data that `athanor train` accepts as is."""
    from athanor.errors import AthanorError
    from athanor.ops.datasets import export_traces, write_dataset
    from athanor.ops.trace_store import TraceStore

    if feedback not in ("good", "bad", "any"):
        raise AthanorError(f"--feedback must be good, bad or any, got {feedback!r}")
    if out.suffix.lower() != ".jsonl":
        raise AthanorError(f"{out}: write JSON Lines (a .jsonl file)")
    store = TraceStore(home)
    try:
        records = export_traces(store, format, trace_ids=trace_id or None, model=model, since=since,
                                feedback=feedback, errors=errors)
    except KeyError as e:
        raise AthanorError(f"trace {e.args[0]} not found in {store.path}") from None
    finally:
        store.close()
    if not records:
        raise AthanorError(f"no traces gave {format} records (SFT needs good feedback or a correction; DPO needs a "
                           "correction that differs from the answer); nothing written")
    path, reg = write_dataset(records, out, format, name)
    typer.echo(f"wrote {len(records)} {format} records to {path} (dataset_info.json name: {reg})")


def register(traces_app: typer.Typer) -> None:
    """Add `export` to the `traces` sub-app."""
    traces_app.command("export")(export)


def mount(app: typer.Typer) -> None:
    """Add `traces export` to the main app: into athanor.ops.cli.traces_app when it exists, else a new sub-app."""
    try:
        from athanor.ops.cli import traces_app  # type: ignore[attr-defined]
    except ImportError:
        traces_app = typer.Typer(no_args_is_help=True, help="Traces: export rated calls as training data.")
        app.add_typer(traces_app, name="traces")
    register(traces_app)
