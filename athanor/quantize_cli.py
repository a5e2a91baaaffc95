"""`athanor quantize MODEL --type T --out FILE.gguf` and `athanor perplexity MODEL FILE`: the commands and the
quality numbers they print.

quantize: the model's float weights (a store name, .gguf or Hugging Face dir) written as a GGUF file of a
llama.cpp file type (models/gguf_quantize.py chooses each tensor's type), then, with --eval-text, the
perplexity of source and result on that text and the mean KL divergence of the result's next-token
distribution from the source's (llama.cpp's `perplexity --kl-divergence` measure).
perplexity: exp(mean negative log-likelihood) over windows of --ctx tokens, each window scored from its
second token on, as the model runs under `athanor run` (quantized files in their own blocks).
With --imatrix FILE (llama.cpp's GGUF or legacy .dat imatrix, e.g. from `athanor imatrix`), the block
quantizers weight their errors by it, as `llama-quantize --imatrix`.
Not for: computing importance matrices (imatrix_cli.py), or the quantizers themselves (models/gguf_quantize.py).
Imports only typer at module level: `athanor --help` stays instant.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer

from athanor.errors import AthanorError


def _model(name: str):
    """(model, tokenizer) as `athanor run` builds it on the CPU (a quantized GGUF keeps its blocks)."""
    from athanor.runtime.llm import scoring_model

    return scoring_model(name)


def _windows(tokenizer, text: str, ctx: int) -> list[list[int]]:
    ids = tokenizer.encode(text)
    if len(ids) < 2:
        raise AthanorError("the evaluation text is shorter than two tokens")
    return [ids[i : i + ctx] for i in range(0, len(ids) - 1, ctx) if len(ids[i : i + ctx]) >= 2]


def _log_probs(model, window: list[int]):
    import torch

    h = model.hidden_states(torch.tensor(window))  # (T, C), cache-free
    return torch.log_softmax(model.lm_head(h[:-1]).float(), dim=-1)  # (T-1, V): predictions of tokens 1..T-1


def perplexity_of(model, tokenizer, text: str, ctx: int = 512) -> float:
    nll, count = 0.0, 0
    for w in _windows(tokenizer, text, ctx):
        lp = _log_probs(model, w)
        nll -= lp.gather(1, _targets(w)).sum().item()
        count += len(w) - 1
    return math.exp(nll / count)


def perplexity_paged(llm, text: str, ctx: int = 512, chunk: int = 32) -> float:
    """Perplexity through the engine's paged KV cache: each window prefilled `chunk` tokens at a time, so every
    token after the first chunk attends to keys and values read back from the cache (its storage type, e.g. an
    int8 `--kv-cache-type q8_0`, is what this measures). `llm` must have prefix caching off."""
    import torch

    from athanor.engine.sampling_params import SamplingParams
    from athanor.engine.sequence import Sequence

    engine = llm.engine
    nll, count = 0.0, 0
    for w in _windows(llm.tokenizer, text, ctx):
        seq = Sequence(w, SamplingParams(max_tokens=1))
        engine.block_manager.allocate(seq)
        try:
            parts = []
            for start in range(0, len(w), chunk):
                seq.num_computed_tokens = start
                parts.append(engine.runner.logits_all([(seq, min(chunk, len(w) - start))]))
        finally:
            engine.block_manager.free(seq)
        lp = torch.log_softmax(torch.cat(parts)[:-1], dim=-1)
        nll -= lp.gather(1, _targets(w)).sum().item()
        count += len(w) - 1
    return math.exp(nll / count)


def _paged_llm(name: str, kv_cache_type: str):
    """The model as `athanor run --kv-cache-type T` loads it, prefix caching off (every window computes its cache)."""
    from athanor.engine.config import EngineConfig
    from athanor.runtime.handle import ModelHandle
    from athanor.runtime.registry import ModelRegistry

    registry = ModelRegistry(engine_config=EngineConfig(kv_cache_type=kv_cache_type, enable_prefix_caching=False))
    return ModelHandle.open(name, registry).llm


def _targets(window: list[int]):
    import torch

    return torch.tensor(window[1:]).unsqueeze(1)


def compare(source, quantized, tokenizer, text: str, ctx: int = 512) -> dict:
    """Perplexity of both models and mean KL(source || quantized) per predicted token, on the same windows."""
    nll_s = nll_q = kld = 0.0
    count = 0
    for w in _windows(tokenizer, text, ctx):
        ls, lq = _log_probs(source, w), _log_probs(quantized, w)
        t = _targets(w)
        nll_s -= ls.gather(1, t).sum().item()
        nll_q -= lq.gather(1, t).sum().item()
        kld += (ls.exp() * (ls - lq)).sum().item()
        count += len(w) - 1
    return {"ppl_source": math.exp(nll_s / count), "ppl_quantized": math.exp(nll_q / count),
            "kld": kld / count, "tokens": count}


def quantize_model(model: str, type_name: str, out: Path, imatrix_path: Path | None = None) -> Path:
    from athanor.models.gguf_export import write_gguf_file
    from athanor.models.gguf_quantize import FILE_TYPES
    from athanor.models.loader import load_checkpoint
    from athanor.models.store import Store

    if type_name not in FILE_TYPES:
        raise AthanorError(f"quantization type {type_name!r} is not supported; choose one of {', '.join(FILE_TYPES)}")
    if out.suffix != ".gguf":
        raise AthanorError(f"--out should be a file path ending in .gguf, got {out}")
    im = None
    if imatrix_path is not None:
        from athanor.models.imatrix_file import read_imatrix

        im = read_imatrix(imatrix_path)
    ckpt = load_checkpoint(Store().resolve(model).weights)  # float32 tensors in
    write_gguf_file(ckpt, out, type_name, imatrix=im, imatrix_file=str(imatrix_path) if imatrix_path else None)
    return out


def quantize(
    model: str = typer.Argument(..., help="store name, .gguf file or Hugging Face directory (its float weights)"),
    type: str = typer.Option(..., "--type", help="Q4_K_M, Q5_K_M, Q6_K, Q8_0, Q4_0, Q5_0, IQ4_NL or IQ4_XS"),
    out: Path = typer.Option(..., "--out", "-o", help="the .gguf file to write"),
    eval_text: Optional[Path] = typer.Option(None, "--eval-text", help="a text file: print perplexity and KL "
                                             "divergence against the source on it"),
    ctx: int = typer.Option(512, "--ctx", help="evaluation window in tokens"),
    imatrix: Optional[Path] = typer.Option(None, "--imatrix", help="importance matrix file (llama.cpp's GGUF or "
                                           ".dat format, e.g. from `athanor imatrix`) weighting the quantizers"),
    max_kld: Optional[float] = typer.Option(None, "--max-kld", help="quality gate (needs --eval-text): exit 1 "
                                            "when the mean KL divergence from the source is above this"),
    json_out: bool = typer.Option(False, "--json", help="print one JSON object instead of text"),
) -> None:
    """Quantize a model to a GGUF file llama.cpp loads (llama.cpp's per-tensor type choices, optional imatrix)."""
    import json

    if max_kld is not None and eval_text is None:
        raise AthanorError("--max-kld needs --eval-text: the KL divergence is measured on that text")
    path = quantize_model(model, type.upper(), out, imatrix)
    report: dict = {"file": str(path), "type": type.upper(), "bytes": path.stat().st_size,
                    "imatrix": str(imatrix) if imatrix else None}
    if not json_out:
        typer.echo(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB, {type.upper()})")
    if eval_text is not None:
        source, tokenizer = _model(model)
        quantized, _ = _model(str(path))
        report |= compare(source, quantized, tokenizer, eval_text.read_text(encoding="utf-8"), ctx)
        if not json_out:
            typer.echo(f"perplexity: source {report['ppl_source']:.4f}  quantized {report['ppl_quantized']:.4f}  "
                       f"KL divergence {report['kld']:.6f} (mean over {report['tokens']} tokens)")
    failed = max_kld is not None and report["kld"] > max_kld
    report["gate"] = None if max_kld is None else ("failed" if failed else "passed")
    if json_out:
        typer.echo(json.dumps(report))
    if failed:
        typer.echo(f"quality gate failed: KL divergence {report['kld']:.6f} > --max-kld {max_kld} "
                   f"({path} is kept for inspection)", err=True)
        raise typer.Exit(1)


def perplexity(
    model: str = typer.Argument(..., help="store name, .gguf file or Hugging Face directory"),
    file: Path = typer.Argument(..., help="a UTF-8 text file"),
    ctx: int = typer.Option(512, "--ctx", help="window in tokens"),
    json_out: bool = typer.Option(False, "--json", help="print {\"perplexity\": ...} as JSON"),
    kv_cache_type: Optional[str] = typer.Option(None, "--kv-cache-type", help="score through the engine's paged "
                                                "KV cache stored as auto, f32, f16 or q8_0 (windows prefilled "
                                                "--chunk tokens at a time, later tokens reading the cache)"),
    chunk: int = typer.Option(32, "--chunk", help="with --kv-cache-type: tokens per prefill step"),
    source: Optional[str] = typer.Option(None, "--source", help="also the mean KL divergence of MODEL's next-token "
                                         "distribution from this model's (e.g. the F16 file MODEL was made from)"),
) -> None:
    """Perplexity of MODEL on FILE, as the model runs under `athanor run`."""
    import json

    text = file.read_text(encoding="utf-8")
    if source is not None:
        if kv_cache_type is not None:
            raise AthanorError("--source measures the cache-free forward; leave out --kv-cache-type")
        m, tokenizer = _model(model)
        result = compare(_model(source)[0], m, tokenizer, text, ctx)
        report = {"model": model, "perplexity": result["ppl_quantized"], "source": source,
                  "ppl_source": result["ppl_source"], "kld": result["kld"], "tokens": result["tokens"]}
        typer.echo(json.dumps(report) if json_out else f"perplexity {report['perplexity']:.4f}  source "
                   f"{report['ppl_source']:.4f}  KL divergence {report['kld']:.6f} ({report['tokens']} tokens)")
        return
    if kv_cache_type is None:
        m, tokenizer = _model(model)
        value = perplexity_of(m, tokenizer, text, ctx)
    else:
        if chunk < 1:
            raise AthanorError(f"--chunk must be >= 1, got {chunk}")
        value = perplexity_paged(_paged_llm(model, kv_cache_type), text, ctx, chunk)
    report = {"model": model, "perplexity": value, "kv_cache_type": kv_cache_type}
    typer.echo(json.dumps(report) if json_out else f"perplexity {value:.4f}")


def register(app: typer.Typer) -> None:
    from athanor.imatrix_cli import register as register_imatrix  # imports only typer

    app.command()(quantize)
    app.command()(perplexity)
    register_imatrix(app)  # `athanor imatrix`
