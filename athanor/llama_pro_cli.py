"""`athanor llama-pro MODEL --out DIR --num-expand N`: LLaMA Pro block expansion (LLaMA-Factory's
scripts/llama_pro.py) as a command.

Not for: the expansion itself (train/llama_pro.py). Imports only typer at module level: `athanor --help` stays
instant.
"""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("llama-pro")
    def llama_pro(model: str = typer.Argument(..., help="store name, Hugging Face folder or GGUF file"),
                  out: Path = typer.Option(..., "--out", "--output_dir", help="folder for the expanded model"),
                  num_expand: int = typer.Option(..., "--num-expand", "--num_expand",
                                                 help="blocks to add; must divide the model's layer count")) -> None:
        """Expand a model by interleaving zero-output copies of its blocks (LLaMA Pro); its logits are unchanged.
        Then train with finetuning_type: freeze, freeze_trainable_layers: N, use_llama_pro: true."""
        from athanor.train.llama_pro import expand_model_dir

        expand_model_dir(model, out, num_expand, echo=typer.echo)
