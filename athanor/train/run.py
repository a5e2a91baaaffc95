"""`athanor train CONFIG.yaml [key=value ...]`: load and check the config, then run the recipe of its stage.

Not for: the recipes themselves (sft.py runs sft and pt, dpo.py) or argument parsing (cli.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from athanor.train.config import load_config


def train(config_path: str | Path, overrides: list[str] | None = None, echo: Callable[[str], None] = print) -> Path:
    """Run the training a YAML file describes; returns output_dir. All config problems raise before any loading."""
    cfg = load_config(config_path, overrides)
    for note in cfg.notes:  # the LLaMA-Factory keys accepted as no-ops, one line per reason
        echo(note)
    if cfg.stage == "rm":
        from athanor.train.rm import run_rm

        out = run_rm(cfg, echo)
        _record(cfg, out, echo)
        echo(f"done: reward model (adapter/model + value_head.safetensors) and logs in {out}")
        return out
    if cfg.stage == "grpo":
        from athanor.train.grpo import run_grpo  # trl loads only now

        out = run_grpo(cfg, echo)
        _record(cfg, out, echo)
        echo(f"done: GRPO adapter/model and logs in {out}")
        return out
    if cfg.stage == "kto":
        from athanor.train.kto import run_kto  # trl/transformers/peft load only now

        out = run_kto(cfg, echo)
        _record(cfg, out, echo)
        echo(f"done: adapter/model and logs in {out}")
        return out
    if cfg.stage == "dpo":
        from athanor.train.dpo import run_dpo  # transformers/peft load only now

        out = run_dpo(cfg, echo)
        _record(cfg, out, echo)
        echo(f"done: adapter/model and logs in {out}")
        return out
    if not cfg.do_train:  # do_predict only (config checks allow nothing else)
        from athanor.train.predict import predict_only

        out = predict_only(cfg, echo)
        echo(f"done: predictions in {out}")
        return out
    from athanor.train.sft import run_sft  # stage: sft and stage: pt

    result = run_sft(cfg, echo)
    _record(cfg, result.output_dir, echo)
    echo(f"done: train loss {result.train_loss:.4f}; adapter/model and logs in {result.output_dir}")
    return result.output_dir


def _record(cfg, out: Path, echo: Callable[[str], None]) -> None:
    """out/lineage.json (base digest, config keys, dataset hashes and source traces); one process writes it."""
    import os

    from athanor.errors import AthanorError
    from athanor.train.lineage import record_training

    if os.environ.get("RANK", "0") != "0":
        return
    try:
        record_training(cfg, Path(out))
    except (OSError, ValueError, AthanorError) as e:  # the run is done and saved: a lineage problem must not lose it
        echo(f"warning: could not write {Path(out) / 'lineage.json'}: {type(e).__name__}: {e}")
