"""What a training run tells the user: trainer_log.jsonl, the loss-curve PNG, and a memory estimate up front.

For: a `transformers.TrainerCallback` that appends every log event to `output_dir/trainer_log.jsonl` (with
tokens/s), `plot_loss` (log -> loss.png, matplotlib imported lazily), and `estimate_memory` (weights, gradients,
AdamW state and activations, from parameter counts and shapes: a planning number, not a measurement).

Not for: the training loop (sft.py) or benchmarks (benchmarks/ measure; this only estimates).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

LOG_FILE = "trainer_log.jsonl"
PLOT_FILE = "loss.png"


class JsonlLogCallback(TrainerCallback):
    """Appends every log event (loss, learning rate, tokens seen, tokens/s) to output_dir/trainer_log.jsonl."""

    def __init__(self, output_dir: Path) -> None:
        self.path = Path(output_dir) / LOG_FILE
        self.start = time.perf_counter()
        self.start_tokens = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not state.global_step and state.is_world_process_zero:  # a resumed run keeps appending to the same log
            self.path.write_text("")
        self.start = time.perf_counter()
        self.start_tokens = getattr(state, "num_input_tokens_seen", 0) or 0

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero:  # every process logs the same (gathered) numbers: write them once
            return
        elapsed = time.perf_counter() - self.start
        record = {"step": state.global_step, "max_steps": state.max_steps, "elapsed_s": round(elapsed, 3),
                  **(logs or {})}
        tokens = (getattr(state, "num_input_tokens_seen", 0) or 0) - self.start_tokens  # this session only
        if tokens and elapsed > 0:
            record["tokens_per_s"] = round(tokens / elapsed, 1)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, default=float) + "\n")


def plot_loss(log_path: str | Path, png_path: str | Path | None = None) -> Path | None:
    """Training (and eval) loss by step from trainer_log.jsonl -> PNG; None when there is nothing to plot or
    matplotlib is not installed (it is in the `train` extra)."""
    log_path = Path(log_path)
    rows = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    train = {r["step"]: r["loss"] for r in rows if "loss" in r}  # a resumed run overwrites repeated steps
    evals = {r["step"]: r["eval_loss"] for r in rows if "eval_loss" in r}
    if not train:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, never a window
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot(sorted(train), [train[s] for s in sorted(train)], label="train loss")
    if evals:
        ax.plot(sorted(evals), [evals[s] for s in sorted(evals)], "o-", label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    out = Path(png_path) if png_path else log_path.parent / PLOT_FILE
    fig.savefig(out, bbox_inches="tight")
    plt.close(fig)
    return out


@dataclass
class MemoryEstimate:
    """Bytes of each part of training memory (fp32 master weights, AdamW)."""

    weights: int
    grads_and_optimizer: int  # trainable params x (4 grad + 8 AdamW moments)
    activations: int  # one micro-batch's saved activations + logits

    @property
    def total(self) -> int:
        return self.weights + self.grads_and_optimizer + self.activations

    def summary(self) -> str:
        gb = 1024**3
        return (f"memory estimate: ~{self.total / gb:.2f} GiB (weights {self.weights / gb:.2f}, gradients + AdamW "
                f"{self.grads_and_optimizer / gb:.2f}, activations {self.activations / gb:.2f}); to lower it: "
                "smaller per_device_train_batch_size or cutoff_len, gradient_checkpointing: true, finetuning_type: lora")


def estimate_memory(model: Any, batch_size: int, seq_len: int, gradient_checkpointing: bool = False,
                    bytes_per_activation: int = 4) -> MemoryEstimate:
    """Rough peak memory of one training step of `model` (a transformers causal LM, maybe wrapped by peft)."""
    params = list(model.parameters())
    weights = sum(p.numel() * p.element_size() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    cfg = model.config
    tokens = batch_size * seq_len
    # Per layer and token, a decoder keeps ~(4 attention + 3 MLP-width/hidden) hidden-sized tensors for backward:
    # about 10 x hidden + 3 x intermediate values (Korthikanti et al. count 34 x hidden bytes in fp16 with dropout).
    per_layer = 10 * cfg.hidden_size + 3 * cfg.intermediate_size
    layers_kept = 1 if gradient_checkpointing else cfg.num_hidden_layers
    saved = tokens * (per_layer * layers_kept + cfg.hidden_size * cfg.num_hidden_layers)
    logits = 3 * tokens * cfg.vocab_size  # logits, their softmax and its gradient
    return MemoryEstimate(weights, trainable * 12, (saved + logits) * bytes_per_activation)
