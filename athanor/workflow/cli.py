"""`athanor workflow …`: the typer sub-app `workflow_app` (mounted by athanor/cli.py). Parse → call → print.

    validate FILE                     every problem at once, with node ids (exit 1 when there are any)
    run FILE --input k=v [--stream]   run a Dify app file; outputs as JSON (or the answer, streamed);
                                      --mcp CMD_OR_URL adds an MCP server's tools for tool/agent nodes
    runs                              recent runs;  show RUN_ID: one run with every node execution
    export FILE --out OUT             write the app back in Dify's format (optionally {"data": ...} wrapped)
    import FILE --name NAME           install an app for `athanor serve`'s Dify service API; prints its app key
    keys                              installed apps and their keys
--bindings FILE / --bind-tool / --bind-kb bind Dify marketplace tools and dataset ids to local ones (bindings.py).
Not for: logic (engine.py, validate.py, runs.py).
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import typer

workflow_app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                           help="workflows: validate and run Dify app DSL files, inspect runs")

ModelOpt = typer.Option(None, "--model", envvar="ATHANOR_WORKFLOW_MODEL",
                        help="default model spec for llm-type nodes, e.g. smollm2")
ModelMapOpt = typer.Option(None, "--model-map", help="YAML/JSON file mapping Dify model names to model specs")
InputOpt = typer.Option(None, "--input", "-i", help="start input KEY=VALUE (repeatable; KEY=@FILE reads a file)")
AllowHostOpt = typer.Option(None, "--allow-host", help="extra host the http-request node may reach and file URLs may come from (repeatable)")
ConversationOpt = typer.Option(None, "--conversation-id", help="advanced-chat: continue (or start) this conversation")
McpOpt = typer.Option(None, "--mcp", help="MCP server (command line or http(s) URL) whose tools the app may call "
                                          "(repeatable)")
UnsafeCodeOpt = typer.Option(False, "--unsafe-code", help="run code nodes WITHOUT the OS sandbox when it is "
                             "unavailable (the code can then read and change all you can); warns each run")
OutOpt = typer.Option(..., "--out", "-o", help="where to write the YAML")
BindingsOpt = typer.Option(None, "--bindings", help="YAML/JSON file binding Dify tools (tools:) and dataset ids "
                                                    "(knowledge:) to local tools and knowledge bases")
BindToolOpt = typer.Option(None, "--bind-tool", help="DIFY_TOOL=OUR_TOOL, e.g. tavily/tavily_search=web_search "
                                                     "(a built-in or an --mcp tool; repeatable)")
BindKbOpt = typer.Option(None, "--bind-kb", help="DATASET_ID=KB_NAME: a Dify dataset id read from a local "
                                                 "knowledge base (repeatable)")


def parse_inputs(pairs: list[str] | None) -> dict:
    """k=v pairs -> dict of strings (the start node's declared types cast them); k=@PATH reads a file."""
    from athanor.keyvalue import parse_pairs, text_or_file

    return parse_pairs(pairs, "input", text_or_file)


def _services(model: str | None, model_map: Path | None, bindings: Path | None = None,
              bind_tool: list[str] | None = None, bind_kb: list[str] | None = None):
    from athanor.workflow.services import Services

    return Services.from_options(model, str(model_map) if model_map else None,
                                 bindings_file=str(bindings) if bindings else None, bind_tools=bind_tool,
                                 bind_kbs=bind_kb)


def add_mcp_tools(services, servers: list[str] | None, stack: contextlib.ExitStack) -> None:
    """Connect each MCP server (closed when `stack` closes) and put its tools into services.tools."""
    if not servers:
        return
    from athanor.agent.mcp import MCPServerTools

    for server in servers:
        for tool in stack.enter_context(MCPServerTools(server)).tools:
            services.tools[tool.name] = tool


@workflow_app.command("validate")
def validate(file: Path, model: str | None = ModelOpt, model_map: Path | None = ModelMapOpt,
             mcp: list[str] | None = McpOpt, bindings: Path | None = BindingsOpt,
             bind_tool: list[str] | None = BindToolOpt, bind_kb: list[str] | None = BindKbOpt) -> None:
    """Check a Dify app file; print every problem with its node id (models too, given --model/--model-map).
    Warnings (tools or knowledge bases that are not here: only their node fails) do not fail the check."""
    from athanor.workflow.dsl import load_app
    from athanor.workflow.validate import validate_app

    app = load_app(file)
    bound = bool(bindings or bind_tool or bind_kb)
    services = _services(model, model_map, bindings, bind_tool, bind_kb) if (model or model_map or mcp or bound) \
        else None
    warnings: list = []
    with contextlib.ExitStack() as stack:
        add_mcp_tools(services, mcp, stack)
        problems = validate_app(app, services, check_models=bool(model or model_map), warnings=warnings)
    for p in [*problems, *warnings]:
        typer.echo(str(p))
    if problems:
        typer.echo(f"{len(problems)} problem(s) in {file}", err=True)
        raise typer.Exit(1)
    note = f", {len(warnings)} warning(s)" if warnings else ""
    typer.echo(f"ok: {app.name or file.name} ({app.mode}, {len(app.nodes)} nodes, {len(app.edges)} edges{note})")


@workflow_app.command("run")
def run(
    file: Path,
    input: list[str] | None = InputOpt,
    query: str = typer.Option("", "--query", "-q", help="the user message (advanced-chat apps: sys.query)"),
    stream: bool = typer.Option(False, "--stream", help="print answer text as it is generated"),
    events: bool = typer.Option(False, "--events", help="print every event as a JSON line"),
    model: str | None = ModelOpt,
    model_map: Path | None = ModelMapOpt,
    allow_host: list[str] | None = AllowHostOpt,
    conversation_id: str | None = ConversationOpt,
    mcp: list[str] | None = McpOpt,
    bindings: Path | None = BindingsOpt,
    bind_tool: list[str] | None = BindToolOpt,
    bind_kb: list[str] | None = BindKbOpt,
    unsafe_code: bool = UnsafeCodeOpt,
) -> None:
    """Run a workflow (or one advanced-chat turn); the run is saved for `workflow runs` / `workflow show`."""
    from athanor.workflow.dsl import load_app
    from athanor.workflow.engine import WorkflowEngine
    from athanor.workflow.runs import RunStore

    app = load_app(file)
    services = _services(model, model_map, bindings, bind_tool, bind_kb)
    services.http_allow_hosts |= set(allow_host or [])
    services.file_url_hosts |= set(allow_host or [])
    services.unsafe_code = unsafe_code
    store = RunStore()
    observers = [store.observer(app)]
    if events:
        observers.append(lambda e: typer.echo(json.dumps(e, ensure_ascii=False, default=str)))
    elif stream:
        observers.append(_print_text)
    saved = (store.conversation(conversation_id) if conversation_id else None) or {}
    if saved and saved.get("app_name") != app.name:
        from athanor.workflow.errors import WorkflowError

        raise WorkflowError(f"conversation {conversation_id!r} belongs to app {saved.get('app_name')!r}, "
                            f"not {app.name!r}")
    count, history = saved.get("dialogue_count", 0) + 1, saved.get("history") or []
    with contextlib.ExitStack() as stack:
        stack.callback(services.close)  # knowledge bases; MCP connections close before it (LIFO)
        add_mcp_tools(services, mcp, stack)
        result = WorkflowEngine(app, services, observers).run(
            parse_inputs(input), query=query, conversation_id=conversation_id, dialogue_count=count,
            conversation=saved.get("variables"), history=history)
    if app.runs_as == "advanced-chat" and result.status != "failed":
        store.save_turn(app.name, result, query, count, history)
        typer.echo(f"conversation {result.conversation_id} (continue with --conversation-id)", err=True)
    if stream and not events:
        typer.echo("")
    if result.status == "failed":
        typer.echo(f"error: {result.error} (run {result.run_id})", err=True)
        raise typer.Exit(1)
    if not events and not (stream and app.runs_as == "advanced-chat"):
        shown = result.answer if app.runs_as == "advanced-chat" else json.dumps(result.outputs, ensure_ascii=False,
                                                                              indent=2, default=str)
        typer.echo(shown)
    typer.echo(f"run {result.run_id}: {result.status} in {result.elapsed_time:.2f} s, {result.total_steps} steps",
               err=True)


def _print_text(event: dict) -> None:
    if event["event"] == "text_chunk":
        sys.stdout.write(event["data"]["text"])
    elif event["event"] == "message":
        sys.stdout.write(event["answer"])
    else:
        return
    sys.stdout.flush()


@workflow_app.command("runs")
def runs(limit: int = typer.Option(20, help="how many, newest first")) -> None:
    """Recent workflow runs."""
    import time

    from athanor.workflow.runs import RunStore

    rows = RunStore().list_runs(limit)
    if not rows:
        typer.echo("no workflow runs yet")
        return
    typer.echo(f"{'RUN ID':36}  {'STATUS':17}  {'SECONDS':>8}  {'STARTED':19}  APP")
    for r in rows:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["created_at"] or 0))
        typer.echo(f"{r['id']:36}  {r['status']:17}  {r['elapsed_time'] or 0:8.2f}  {started}  {r['app_name']}")


@workflow_app.command("show")
def show(run_id: str, as_json: bool = typer.Option(False, "--json", help="the whole record as JSON")) -> None:
    """One run: inputs, outputs, status, and every node execution."""
    from athanor.workflow.runs import RunStore

    run = RunStore().get_run(run_id)
    if as_json:
        typer.echo(json.dumps(run, ensure_ascii=False, indent=2, default=str))
        return
    typer.echo(f"run {run['id']}  app {run['app_name']} ({run['app_mode']})  status {run['status']}  "
               f"{run['elapsed_time'] or 0:.2f} s  {run['total_steps'] or 0} steps")
    typer.echo(f"inputs:  {json.dumps(run['inputs'], ensure_ascii=False, default=str)}")
    typer.echo(f"outputs: {json.dumps(run['outputs'], ensure_ascii=False, default=str)}")
    if run["error"]:
        typer.echo(f"error:   {run['error']}")
    for n in run["node_executions"]:
        scope = f" [{'iteration ' + n['iteration_id'] if n['iteration_id'] else 'loop ' + n['loop_id']}]" \
            if n["iteration_id"] or n["loop_id"] else ""
        typer.echo(f"  {n['idx']:>3}  {n['node_id']:24} {n['node_type']:20} {n['status']:10} "
                   f"{n['elapsed_time'] or 0:7.3f} s{scope}" + (f"  error: {n['error']}" if n["error"] else ""))


@workflow_app.command("export")
def export(file: Path, out: Path = OutOpt,
           wrapped: bool = typer.Option(False, "--wrapped", help='write {"data": "<yaml>"} JSON as Dify\'s API does')
           ) -> None:
    """Write an app back in Dify's DSL format (reads plain or wrapped files)."""
    from athanor.workflow.dsl import load_app, save_app

    app = load_app(file)
    save_app(app, out, wrapped)
    typer.echo(f"wrote {out} ({app.mode}, {len(app.nodes)} nodes)")


@workflow_app.command("import")
def import_app(file: Path, name: str = typer.Option(None, "--name", help="app name (default: the file's stem)"),
               force: bool = typer.Option(False, "--force", help="replace an installed app of that name")) -> None:
    """Install a Dify app for `athanor serve` and print its API key (Authorization: Bearer app-...)."""
    from athanor.workflow.service_store import install_app

    key, path = install_app(file, name, force)
    typer.echo(f"installed {path}", err=True)
    typer.echo(key)


@workflow_app.command("keys")
def keys() -> None:
    """The installed apps and their API keys."""
    from athanor.workflow.service_store import ServiceStore

    rows = ServiceStore().list_keys()
    if not rows:
        typer.echo("no app keys yet (athanor workflow import FILE --name NAME)")
    for row in rows:
        typer.echo(f"{row['app_name']:24} {row['key']}")


if __name__ == "__main__":  # `python -m athanor.workflow.cli …` runs the sub-app on its own
    from athanor.errors import AthanorError

    try:
        workflow_app()
    except (AthanorError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise SystemExit(1) from None
