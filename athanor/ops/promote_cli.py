"""`athanor promote NEW --over OLD --eval DATA.jsonl [--scorer exact] [--alias NAME]`: the command around
promote.py. Exit 0 and one line when the alias moved; exit 1 and one line with the numbers when refused.
Imports only typer at module level: `athanor --help` stays instant. Not for: the decision itself (promote.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer


def promote(
    new: str = typer.Argument(..., help="the candidate model (store name)"),
    over: str = typer.Option(..., "--over", help="the model (or alias) it replaces"),
    eval_data: Path = typer.Option(..., "--eval", help="OpenAI-evals-style JSONL: {input|prompt, ideal}"),
    scorer: str = typer.Option("exact", "--scorer", help="exact, contains, regex, json-schema, tool-call, judge:M"),
    alias: str | None = typer.Option(None, "--alias", help="the serving alias to move (default: OLD when it is "
                                        "an alias, else prod)"),
    limit: int | None = typer.Option(None, "--limit", help="evaluate only the first N items"),
    max_tokens: int = typer.Option(256, "--max-tokens", help="reply length limit per item"),
    as_json: bool = typer.Option(False, "--json", help="print the promotion record as JSON"),
) -> None:
    """Evaluate NEW and OLD on the same items; move the alias to NEW unless it is worse beyond noise."""
    from athanor.models.store import short_name
    from athanor.ops.promote import PromotionRefused, summary
    from athanor.ops.promote import promote as run_promote

    try:
        record = run_promote(new, over, eval_data, scorer, alias=alias, limit=limit, max_tokens=max_tokens)
    except PromotionRefused as e:
        typer.echo(json.dumps(e.record, default=str) if as_json else f"error: {e}", err=not as_json)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(record, default=str))
        return
    typer.echo(f"promoted: {short_name(record['alias'])} -> {short_name(record['new'])} (was "
               f"{short_name(record['previous_target'] or '-')}); {summary(record)}")


def register(app: typer.Typer) -> None:
    app.command("promote")(promote)
