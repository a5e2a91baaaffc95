"""`athanor chat CONFIG` and `athanor export` (flags, or CONFIG.yaml with LLaMA-Factory keys): the typer commands.

For: the command-line surface only; `register(app)` mounts both on the main app. Imports nothing but typer at
module level, so `athanor --help` stays instant; the work is in infer_config.py and export.py.
Not for: training (`athanor train` is in cli.py) or the chat loop itself (chat_cli.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from athanor.errors import AthanorError


def chat(
    config: Path = typer.Argument(..., help="a YAML with model_name_or_path and adapter_name_or_path (or a training "
                                  "YAML: its output_dir is the adapter)"),
    overrides: Optional[list[str]] = typer.Argument(None, help="key=value overrides, e.g. template=chatml"),
    prompt: Optional[str] = typer.Option(None, "--prompt", "-p", help="answer this once instead of chatting"),
    verbose: bool = typer.Option(False, "--verbose", help="print load/prompt/eval statistics after each answer"),
) -> None:
    """Chat with a base model + its trained adapter through athanor's engine (LLaMA-Factory's `chat`)."""
    from athanor.infer_config import chat_from_config

    chat_from_config(config, overrides or [], verbose=verbose, prompt=prompt)


def export(
    source: str = typer.Argument(..., help="CONFIG.yaml (LLaMA-Factory export keys), or the base: a store name, a "
                                 ".gguf file or a Hugging Face directory"),
    overrides: Optional[list[str]] = typer.Argument(None, help="key=value overrides for CONFIG.yaml"),
    adapter: Optional[Path] = typer.Option(None, "--adapter", help="a peft LoRA adapter dir to merge in"),
    out: Optional[Path] = typer.Option(None, "--out", help="a new directory (hf) or a .gguf file path (gguf)"),
    format: str = typer.Option("hf", "--format", help="hf or gguf"),
    gguf_type: str = typer.Option("F16", "--gguf-type", help="GGUF tensor type: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q4_K_M, Q5_K_M, Q6_K, IQ4_NL or IQ4_XS"),
    dtype: str = typer.Option("fp32", "--dtype", help="hf weights: fp32, fp16 or bf16"),
    max_shard_size: Optional[str] = typer.Option(None, "--max-shard-size", help="hf: split weights into files of "
                                                 "at most this size, e.g. 2GB (default: one file)"),
    name: Optional[str] = typer.Option(None, "--name", help="also register the export under this store name"),
    template: Optional[str] = typer.Option(None, "--template", help="the export's chat template: chatml, a Jinja "
                                           "source or one of the model's named templates (default: the model's)"),
) -> None:
    """Merge a LoRA adapter into its base and write a Hugging Face directory or a GGUF file."""
    if source.endswith((".yaml", ".yml")) and Path(source).is_file():
        from athanor.infer_config import export_from_config

        export_from_config(source, overrides or [], echo=typer.echo)
        return
    if overrides:
        raise AthanorError(f"unexpected arguments {' '.join(overrides)}: key=value overrides go with a CONFIG.yaml")
    if out is None:
        raise AthanorError("--out is required when exporting from a model (or give a CONFIG.yaml with export_dir)")
    from athanor.train.export import export_model

    path = export_model(source, str(adapter) if adapter else None, out, format, gguf_type, register_as=name,
                        dtype=dtype, max_shard_size=max_shard_size, template=template)
    typer.echo(f"wrote {path}" + (f"; run it with: athanor run {name}" if name else ""))


def register(app: typer.Typer) -> None:
    app.command("chat")(chat)
    app.command("export")(export)
