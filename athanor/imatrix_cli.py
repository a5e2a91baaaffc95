"""`athanor imatrix MODEL --text FILE -o OUT.gguf`: an importance matrix for `athanor quantize --imatrix`, in
llama.cpp's file format (so `llama-quantize --imatrix` reads it too, and ours reads llama-imatrix's files).

Runs the model's float weights on the text in `--chunk`-token pieces and sums the squared inputs of every
quantizable matmul per column (models/imatrix_collect.py); writes the GGUF imatrix format, or the legacy .dat
with `--format dat` (models/imatrix_file.py).
Not for: quantizing (quantize_cli.py). Imports only typer at module level: `athanor --help` stays instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from athanor.errors import AthanorError


def imatrix(
    model: str = typer.Argument(..., help="store name, .gguf file or Hugging Face directory (run in float32)"),
    text: Path = typer.Option(..., "--text", "-f", help="calibration text file (UTF-8)"),
    out: Path = typer.Option(..., "--out", "-o", help="the imatrix file to write (.gguf, or .dat with --format dat)"),
    chunk: int = typer.Option(512, "--chunk", help="tokens per chunk (llama-imatrix's --ctx-size)"),
    chunks: Optional[int] = typer.Option(None, "--chunks", help="use at most this many chunks (default: all)"),
    fmt: str = typer.Option("gguf", "--format", help="gguf (llama.cpp's current format) or dat (legacy)"),
) -> None:
    """Compute an importance matrix (llama-imatrix's per-column mean of squared activations) from a text."""
    from athanor.models.imatrix_collect import imatrix_of
    from athanor.models.imatrix_file import write_dat, write_gguf
    from athanor.runtime.llm import float_model

    if fmt not in ("gguf", "dat"):
        raise AthanorError(f"--format must be gguf or dat, got {fmt!r}")
    if chunk < 2:
        raise AthanorError(f"--chunk must be >= 2 tokens, got {chunk}")
    if chunks is not None and chunks < 1:
        raise AthanorError(f"--chunks must be >= 1, got {chunks}")
    if not text.is_file():
        raise AthanorError(f"calibration text {text} does not exist")
    im = imatrix_of(*float_model(model), text.read_text(encoding="utf-8"), chunk, chunks, dataset=str(text))
    out.parent.mkdir(parents=True, exist_ok=True)
    (write_gguf if fmt == "gguf" else write_dat)(im, out)
    typer.echo(f"wrote {out}: {len(im.entries)} entries from {im.chunk_count} chunks of {im.chunk_size} tokens")


def register(app: typer.Typer) -> None:
    app.command()(imatrix)
