"""The `athanor` command: the only place that wires layers together. Thin: parse → call → print.

Heavy modules (torch, the engine, model formats) are imported inside the commands so `athanor --help`
returns instantly. User errors (AthanorError, ValueError from option parsing) print one line, no traceback.
"""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="athanor: run, fine-tune, serve and build on open LLMs, offline.")

def _mount_subcommands() -> None:
    from athanor.cli_tracing import traced_group  # `kb ask` and `workflow run` record traces (imports only typer)
    from athanor.rag.cli import kb_app  # imports only typer: `athanor --help` stays instant (tested)

    app.add_typer(kb_app, name="kb", help="Knowledge bases: ingest folders, hybrid search, cited answers.",
                  callback=traced_group)
    from athanor.workflow.cli import workflow_app  # imports only typer; the engine loads inside the commands

    app.add_typer(workflow_app, name="workflow",
                  help="Workflows: validate and run Dify app DSL files, inspect runs (validate, run, runs, show, export).",
                  callback=traced_group)
    from athanor.cli_ext import register as register_train_commands  # imports only typer

    register_train_commands(app)  # `athanor chat CONFIG`, `athanor export` (flags or CONFIG.yaml)
    from athanor.quantize_cli import register as register_quantize_commands  # imports only typer

    register_quantize_commands(app)  # `athanor quantize`, `athanor perplexity`
    from athanor.llama_pro_cli import register as register_llama_pro  # imports only typer

    register_llama_pro(app)  # `athanor llama-pro MODEL --out DIR --num-expand N`
    from athanor.ops.cli import register as register_ops_commands  # imports only typer

    register_ops_commands(app)  # `athanor traces list|show`, `athanor feedback`
    from athanor.ops.eval_cli import register as register_eval_commands  # imports only typer

    register_eval_commands(app)  # `athanor eval MODEL DATA|--tasks`, `eval compare`, `eval runs`
    from athanor.ops.datasets_cli import mount as mount_dataset_commands  # imports only typer

    mount_dataset_commands(app)  # `athanor traces export`
    from athanor.ops.promote_cli import register as register_promote  # imports only typer

    register_promote(app)  # `athanor promote NEW --over OLD --eval DATA.jsonl`


_mount_subcommands()

OptionList = typer.Option(None, "--option", "-o", help="sampling/engine option KEY=VALUE (repeatable), e.g. -o temperature=0")


def main() -> None:
    from athanor.errors import AthanorError

    try:
        app()
    except (AthanorError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None


def _parse_options(pairs: list[str] | None) -> dict:
    from athanor.keyvalue import parse_pairs

    return parse_pairs(pairs, "option")  # JSON values; a bare string stays a string, e.g. stop=END


WeightsOption = typer.Option(
    "auto", "--weights", help="matmul weights on CPU: auto (a quantized GGUF keeps its blocks, else fp16), "
                              "float32 (exact), float16, q4_1 / q8_0 (block kernels, float activations), gguf (the file's own "
                              "blocks with int8 activations, as llama.cpp; Q4_1/Q8_0 files too)")


KV_CACHE_ENV = "ATHANOR_KV_CACHE_TYPE"  # as Ollama's OLLAMA_KV_CACHE_TYPE: f16, q8_0 ... for every command


def _engine_config(device: str, dtype: str, weights: str = "auto", kv_cache_type: str | None = None):
    import os

    from athanor.engine.config import EngineConfig

    kv = kv_cache_type or os.environ.get(KV_CACHE_ENV) or "auto"
    return EngineConfig(device=device, dtype=dtype, weight_dtype=weights, kv_cache_type=kv)


KvCacheOption = typer.Option(None, "--kv-cache-type", help="KV cache storage: auto (math dtype), f32, f16, q8_0 "
                             f"(int8, a quarter of fp32's memory); default ${KV_CACHE_ENV} or auto")


# --- run / generate ----------------------------------------------------------------------------------------


@app.command()
def run(
    model: str = typer.Argument(..., help="store name (e.g. smollm2) or a path to a .gguf file / HF directory"),
    prompt: list[str] | None = typer.Argument(None, help="one-shot prompt; omit for an interactive chat"),
    verbose: bool = typer.Option(False, "--verbose", help="print load/prompt/eval statistics after each answer"),
    option: list[str] | None = OptionList,
    device: str = typer.Option("cpu", help="cpu or cuda[:N]"),
    dtype: str = typer.Option("auto", help="auto, float32, bfloat16, float16"),
    weights: str = WeightsOption,
    kv_cache_type: str | None = KvCacheOption,
) -> None:
    """Chat with a model: one answer when a prompt is given or piped, else an interactive session."""
    from athanor.chat_cli import interactive, one_shot, read_piped_prompt

    text = " ".join(prompt or []) + read_piped_prompt()
    llm = _load(model, option, device, dtype, weights, kv_cache_type)
    if text.strip():
        from athanor.cli_tracing import cli_trace

        with cli_trace(verbose):  # the answer's llm span goes to $ATHANOR_HOME/traces.sqlite (ATHANOR_TRACE=0: off)
            one_shot(llm, text, verbose, model)
    else:
        interactive(llm, verbose)


@app.command()
def generate(
    model: str = typer.Argument(..., help="store name or path"),
    prompt: list[str] = typer.Argument(..., help="raw text to continue (no chat template)"),
    verbose: bool = typer.Option(False, "--verbose"),
    option: list[str] | None = OptionList,
    device: str = typer.Option("cpu"),
    dtype: str = typer.Option("auto"),
    weights: str = WeightsOption,
    kv_cache_type: str | None = KvCacheOption,
) -> None:
    """Raw completion of PROMPT, without the chat template."""
    from athanor.chat_cli import stream_answer

    llm = _load(model, option, device, dtype, weights, kv_cache_type)
    stream_answer(llm, llm.tokenizer.encode(" ".join(prompt)), {}, verbose)


def _load(model: str, option, device: str, dtype: str, weights: str = "auto", kv_cache_type: str | None = None):
    """The model from this process's registry (made with the command's engine flags), held until exit."""
    from athanor.runtime.handle import ModelHandle
    from athanor.runtime.options import params_from_options, sampling_only
    from athanor.runtime.registry import ModelRegistry, use_registry

    options = _parse_options(option)
    params_from_options({}, sampling_only(options))  # fail early
    registry = use_registry(ModelRegistry(engine_config=_engine_config(device, dtype, weights, kv_cache_type))).install()
    handle = ModelHandle.open(model, registry, num_ctx=options.get("num_ctx"))
    handle.llm.defaults.update(sampling_only(options))  # -o beats the Modelfile PARAMETERs
    return handle


# --- the store ---------------------------------------------------------------------------------------------


@app.command("list")
def list_models() -> None:
    """Models in the store (ATHANOR_HOME, default ~/.athanor), then the aliases and what they point at."""
    from athanor.models.store import Store, short_name

    store = Store()
    rows = [("NAME", "FORMAT", "SIZE", "MODIFIED")]
    for m in store.list():
        rows.append((m.name, m.format, _size(m.weights), (m.created_at or "")[:19].replace("T", " ")))
    for alias, target in sorted(store.aliases().items()):  # serving aliases (athanor promote moves them)
        rows.append((alias, f"-> {short_name(target)}", "", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        typer.echo("    ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def _size(path: str) -> str:
    p = Path(path) if path else None
    if not p or not p.exists():
        return "-"
    n = p.stat().st_size if p.is_file() else sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


@app.command()
def show(
    name: str,
    modelfile: bool = typer.Option(False, "--modelfile", help="print a Modelfile that recreates this model"),
    template: bool = typer.Option(False, "--template", help="print only the chat template"),
    license: bool = typer.Option(False, "--license", help="print only the license"),
    lineage: bool = typer.Option(False, "--lineage", help="where it came from: base, adapters, training config, "
                                 "datasets and their traces, evals, promotions"),
    as_json: bool = typer.Option(False, "--json", help="with --lineage: print it as JSON"),
) -> None:
    """Architecture, parameters, quantization, context length, template, parameters and license of a model."""
    from athanor.models.store import Store

    store = Store()
    if lineage:
        import json

        from athanor.ops.lineage import format_lineage, model_lineage

        info = model_lineage(name, store)
        typer.echo(json.dumps(info, indent=2, default=str) if as_json else format_lineage(info))
        return
    if modelfile:
        typer.echo(store.render_modelfile(store.get(name)))
        return
    info = store.show(name)
    if template or license:
        typer.echo(info.get("template" if template else "license") or "")
        return
    typer.echo(_format_show(info))


def _format_show(info: dict) -> str:
    n = info.get("num_parameters") or 0
    lines = ["  Model"]
    for label, value in (
        ("architecture", info.get("architecture")),
        ("parameters", f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"),
        ("context length", info.get("context_length")),
        ("embedding length", info.get("embedding_length")),
        ("quantization", info.get("quantization")),
        ("format", info.get("format")),
    ):
        lines.append(f"    {label:<20}{value}")
    if info.get("parameters"):
        lines += ["", "  Parameters"]
        for k, v in info["parameters"].items():
            for item in v if isinstance(v, list) else [v]:
                lines.append(f"    {k:<20}{item!r}" if isinstance(item, str) else f"    {k:<20}{item}")
    for title, key in (("System", "system"), ("Adapters", "adapters"), ("License", "license")):
        value = info.get(key)
        if value:
            text = "\n".join(value) if isinstance(value, list) else str(value)
            lines += ["", f"  {title}"] + [f"    {line}" for line in text.strip().splitlines()[:8]]
    template = info.get("template") or ""
    lines += ["", "  Template", f"    {len(template)} characters of Jinja (athanor show {info.get('name', '')} --template)"]
    return "\n".join(lines)


@app.command()
def create(name: str, file: Path = typer.Option(..., "-f", "--file", help="path to the Modelfile")) -> None:
    """Create a named model from a Modelfile (FROM a store name, a .gguf file or a HF directory)."""
    import warnings

    from athanor.models.modelfile import ModelfileWarning
    from athanor.models.store import Store

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ModelfileWarning)
        m = Store().create(name, file)
    for w in caught:  # Ollama prints its parameter warnings the same way
        typer.echo(f"warning: {w.message}", err=True)
    typer.echo(f"created {m.name} from {m.parent or m.weights}")


@app.command()
def cp(src: str, dst: str) -> None:
    """Copy a model under a new name."""
    from athanor.models.store import Store

    m = Store().copy(src, dst)
    typer.echo(f"copied {src} to {m.name}")


@app.command()
def rm(names: list[str]) -> None:
    """Remove models from the store (the weights files they point to are left alone)."""
    from athanor.models.store import Store

    store = Store()
    for name in names:
        store.remove(name)
        typer.echo(f"deleted {name}")


# --- training and data -------------------------------------------------------------------------------------

data_app = typer.Typer(no_args_is_help=True, help="Datasets: validate, convert, dedup, stats (alpaca, sharegpt, OpenAI, preference).")
app.add_typer(data_app, name="data")
DatasetDir = typer.Option(None, "--dataset-dir", help="folder with dataset_info.json (LLaMA-Factory's registry)")


@app.command()
def train(
    config: Path = typer.Argument(..., help="a YAML file (LLaMA-Factory key names), e.g. recipes/smollm2_lora_sft.yaml"),
    overrides: list[str] | None = typer.Argument(None, help="key=value overrides, e.g. max_steps=10"),
    check: bool = typer.Option(False, "--check", help="check config, data, template and model; print what would run"),
) -> None:
    """Fine-tune (LoRA / QLoRA / full / freeze; pt, SFT or DPO) from one YAML file; the whole config is checked before anything loads."""
    if check:
        from athanor.train.check import check_run

        check_run(config, overrides or [], echo=typer.echo)
        return
    from athanor.train.run import train as run_training

    out = run_training(config, overrides or [], echo=typer.echo)
    typer.echo(f"saved to {out}")


@data_app.command("validate")
def data_validate(names: list[str], dataset_dir: Path | None = DatasetDir) -> None:
    """Count valid and invalid samples; show the first bad record and why."""
    from athanor.data.registry import validate_datasets

    reports = validate_datasets(names, dataset_dir)
    for r in reports:
        typer.echo(r.summary())
    if any(r.num_invalid for r in reports):
        raise typer.Exit(1)


@data_app.command("convert")
def data_convert(name: str, out: Path, dataset_dir: Path | None = DatasetDir) -> None:
    """Write a dataset's valid samples as OpenAI-messages JSONL."""
    from athanor.data.convert import convert_dataset

    typer.echo(convert_dataset(name, out, dataset_dir).summary())


@data_app.command("stats")
def data_stats(name: str, dataset_dir: Path | None = DatasetDir) -> None:
    """Sample counts, turns, lengths."""
    import json

    from athanor.data.convert import dataset_stats

    typer.echo(json.dumps(dataset_stats(name, dataset_dir), indent=2, ensure_ascii=False))


@data_app.command("dedup")
def data_dedup(name: str, out: Path, dataset_dir: Path | None = DatasetDir,
               threshold: float = typer.Option(0.9, help="MinHash Jaccard threshold for near duplicates")) -> None:
    """Drop exact and near-duplicate samples (MinHash); write the rest as OpenAI-messages JSONL."""
    from athanor.data.dedup import dedup_dataset

    typer.echo(dedup_dataset(name, out, dataset_dir, threshold).summary())


# --- agents ------------------------------------------------------------------------------------------------

UnsafeCodeOption = typer.Option(False, "--unsafe-code", help="run python tools / code nodes WITHOUT the OS sandbox "
                                "when it is unavailable (they can then read and change all you can); warns each run")


@app.command()
def agent(
    question: str | None = typer.Argument(None, help="one question; omit for an interactive session"),
    model: str = typer.Option("smollm2", "--model", "-m", help="a store name, a path, or openai:URL#MODEL"),
    tools: str = typer.Option("calculator", help="comma-separated: calculator, python, read_file, list_dir, http_get"),
    mcp: list[str] | None = typer.Option(None, "--mcp", help="an MCP server: a command (stdio) or an http(s) URL"),
    session: str | None = typer.Option(None, help="continue (and save) this conversation in SQLite"),
    max_iterations: int = typer.Option(10, help="steps before it stops and says so"),
    native: bool = typer.Option(False, help="use the model's native tool calls instead of ReAct text"),
    root: str = typer.Option(".", help="the only folder read_file/list_dir may see"),
    verbose: bool = typer.Option(False, "--verbose"),
    unsafe_code: bool = UnsafeCodeOption,
) -> None:
    """Answer with tools, printing every step (thought, tool call, result) as it happens."""
    from athanor.agent.cli import agent_command
    from athanor.cli_tracing import cli_trace

    with cli_trace(verbose):  # the run's spans go to $ATHANOR_HOME/traces.sqlite (ATHANOR_TRACE=0: off)
        code = agent_command(model, tools, question, session, max_iterations, verbose, mcp=mcp, native=native,
                             root=root, unsafe_code=unsafe_code)
    raise typer.Exit(code)


# --- serving -----------------------------------------------------------------------------------------------


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="address to bind (127.0.0.1: this machine only)"),
    port: int = typer.Option(11435, help="port (11435: one above Ollama's 11434, so both can run)"),
    api_key: str | None = typer.Option(None, envvar="ATHANOR_API_KEY", help="require 'Authorization: Bearer KEY'"),
    api_key_file: str | None = typer.Option(None, help="read the API key from this file's first line (keeps it "
                                                           "off the command line; or set ATHANOR_API_KEY)"),
    allowed_hosts: str | None = typer.Option(None, envvar="ATHANOR_ALLOWED_HOSTS",
                                                help="extra Host names to accept, comma-separated ('*': any; "
                                                     "'.example.com': a domain); others get 403"),
    origins: str | None = typer.Option(None, envvar="ATHANOR_ORIGINS",
                                          help="extra browser origins allowed (CORS), comma-separated, '*' wildcards"),
    max_body: str = typer.Option("32MiB", help="largest request body accepted (413 above)"),
    keep_alive: str = typer.Option("5m", help="how long an idle model stays loaded (Ollama syntax: 30s, 5m, -1)"),
    max_loaded_models: int = typer.Option(3, help="models kept loaded at once (least recently used unloads)"),
    max_memory: str | None = typer.Option(None, envvar="ATHANOR_MAX_MEMORY",
                                             help="memory budget for loaded models' weights + KV caches, e.g. 8GiB "
                                                  "(least recently used idle models unload to fit)"),
    max_pending: int = typer.Option(256, help="queued requests before answering 503 with Retry-After"),
    device: str = typer.Option("cpu", help="cpu or cuda[:N]"),
    weights: str = WeightsOption,
    kv_cache_type: str | None = KvCacheOption,
    log_level: str = typer.Option("info"),
    unsafe_code: bool = UnsafeCodeOption,
    ready_model: list[str] | None = typer.Option(None, help="a model /health/ready requires to be loadable "
                                                    "(repeatable; default $ATHANOR_READY_MODELS, else any)"),
    replicas: int = typer.Option(1, min=1, help="engine replicas; above 1 they run under Ray Serve behind this port "
                                 "(pip install 'athanor[scale]'; docs/scale.md)"),
    no_trace: bool = typer.Option(False, "--no-trace", help="record no traces (default: every model call, in "
                                  "$ATHANOR_HOME/traces.sqlite)"),
    no_trace_content: bool = typer.Option(False, "--no-trace-content", help="trace calls without their messages, "
                                          "replies or tool arguments (tokens and timings are kept)"),
    trace_retention: int = typer.Option(100_000, min=1, help="traces kept; the oldest are pruned past this"),
    otlp_endpoint: str | None = typer.Option(None, envvar="ATHANOR_OTLP_ENDPOINT",
                                             help="also send spans to this OpenTelemetry collector (OTLP/HTTP), "
                                                  "e.g. http://127.0.0.1:4318"),
) -> None:
    """Serve the store's models over the OpenAI API (/v1) and the Ollama API (/api) on one port."""
    import os

    from athanor.ops.tracing_setup import TraceSettings

    if unsafe_code:  # read by the workflow routes (workflow/routes.py) for every run
        os.environ["ATHANOR_UNSAFE_CODE"] = "1"
    from athanor.runtime.registry import parse_bytes, parse_keep_alive
    from athanor.serve.guards import split_list

    options = {"host": host, "port": port, "api_key": api_key, "keep_alive": parse_keep_alive(keep_alive, 300.0),
               "engine_config": _engine_config(device, "auto", weights, kv_cache_type), "max_pending": max_pending,
               "max_loaded_models": max_loaded_models, "max_memory_bytes": parse_bytes(max_memory),
               "log_level": log_level, "ready_models": ready_model or None, "api_key_file": api_key_file,
               "allowed_hosts": split_list(allowed_hosts), "origins": split_list(origins),
               "max_body_bytes": parse_bytes(max_body),
               "trace": TraceSettings(enabled=not no_trace, content=not no_trace_content, retention=trace_retention,
                                      otlp_endpoint=otlp_endpoint)}
    if replicas > 1:
        from athanor.serve.ray_app import run_replicas

        run_replicas(replicas, **options)
    else:
        from athanor.serve.app import serve as run

        run(**options)


@app.command()
def ps(
    url: str = typer.Option("http://127.0.0.1:11435", help="the server to ask"),
    api_key: str | None = typer.Option(None, envvar="ATHANOR_API_KEY"),
) -> None:
    """Models loaded by a running `athanor serve` (name, size, context, expiry), like `ollama ps`."""
    from athanor.serve.client import loaded_models

    rows = [("NAME", "SIZE", "CONTEXT", "UNTIL")]
    rows += [(m["name"], f"{m['size'] / 1e6:.0f} MB", str(m["context"]), m["until"]) for m in loaded_models(url, api_key)]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        typer.echo("    ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


@app.command()
def version() -> None:
    """Print the version."""
    from athanor import __version__

    typer.echo(__version__)


if __name__ == "__main__":
    main()
