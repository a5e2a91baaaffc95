"""Reward modelling (stage: rm): a value head on the model scores a reply; trained on chosen/rejected pairs.

For: `run_rm(cfg)`, LLaMA-Factory's rm stage: a linear value head (hidden size -> 1, as trl's ValueHead) reads the
last hidden state; a reply's score is the value at its last token; the loss is the pairwise
-log sigmoid(score(chosen) - score(rejected)), and the eval metric is the accuracy (share of held-out pairs whose
chosen reply scores higher). Pairs are rendered and cut exactly as for DPO (dpo.split_pairs). Writes the adapter
(or model) plus `value_head.safetensors` (keys `v_head.summary.weight`/`bias`, the names LF's checkpoints use).

Not for: PPO (refused) or serving a reward model.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import transformers

from athanor.train.callbacks import LOG_FILE, JsonlLogCallback, plot_loss
from athanor.train.config import TrainConfig
from athanor.train.dpo import collate_pairs, split_pairs
from athanor.train.optimizers import install_optimizer
from athanor.train.sft import (
    ListDataset,
    base_and_tokenizer,
    load_model,
    pad_token_id,
    resume_arg,
    save_side_files,
    training_arguments,
)

VALUE_HEAD_FILE = "value_head.safetensors"


class ValueHeadModel(torch.nn.Module):
    """A causal LM (maybe with LoRA) whose last hidden state feeds a scalar head."""

    def __init__(self, lm: Any) -> None:
        super().__init__()
        self.lm = lm
        hidden = lm.config.hidden_size
        self.v_head = torch.nn.Linear(hidden, 1)
        torch.nn.init.normal_(self.v_head.weight, std=1.0 / (hidden + 1))
        torch.nn.init.zeros_(self.v_head.bias)

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, **_: Any) -> torch.Tensor:
        base = self.lm.get_base_model() if hasattr(self.lm, "get_base_model") else self.lm
        hidden = base.model(input_ids=input_ids, position_ids=position_ids, use_cache=False).last_hidden_state
        return self.v_head(hidden.to(self.v_head.weight.dtype)).squeeze(-1)  # (B, T)


def pair_scores(model: ValueHeadModel, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen scores, rejected scores): the value at each row's last real token."""
    values = model(inputs["input_ids"], inputs["position_ids"])
    last = inputs["lengths"] - 1
    scores = values.gather(1, last.unsqueeze(1)).squeeze(1)
    half = scores.shape[0] // 2
    return scores[:half], scores[half:]


class PairwiseTrainer(transformers.Trainer):
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        chosen, rejected = pair_scores(model, inputs)
        loss = -F.logsigmoid(chosen - rejected).mean()
        return (loss, {"chosen": chosen, "rejected": rejected}) if return_outputs else loss

    def _save(self, output_dir=None, state_dict=None):  # checkpoints: adapter/model + value head, no tied copies
        save_reward_model(self.model, Path(output_dir or self.args.output_dir))

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval") -> dict[str, float]:
        metrics = pair_metrics(self.model, eval_dataset or self.eval_dataset, self.data_collator, metric_key_prefix)
        self.log(metrics)
        return metrics


def pair_metrics(model: ValueHeadModel, dataset: Any, collator: Callable, prefix: str = "eval") -> dict[str, float]:
    """Mean pairwise loss and accuracy (chosen scored above rejected) over held-out pairs."""
    was_training = model.training
    model.eval()
    losses, wins = [], []
    device = next(model.parameters()).device
    with torch.no_grad():
        for i in range(len(dataset)):
            batch = {k: v.to(device) for k, v in collator([dataset[i]]).items()}
            chosen, rejected = pair_scores(model, batch)
            losses.append(float(-F.logsigmoid(chosen - rejected).mean()))
            wins.append(float((chosen > rejected).float().mean()))
    model.train(was_training)
    return {f"{prefix}_loss": sum(losses) / len(losses), f"{prefix}_accuracy": sum(wins) / len(wins)}


def collate_scored_pairs(batch: list, pad_id: int) -> dict[str, torch.Tensor]:
    out = collate_pairs(batch, pad_id)
    rows = [c for c, _ in batch] + [r for _, r in batch]
    out["lengths"] = torch.tensor([len(r.input_ids) for r in rows])
    return out


def run_rm(cfg: TrainConfig, echo: Callable[[str], None] = print) -> Path:
    assert cfg.stage == "rm", "run_rm only runs stage: rm"
    resume = resume_arg(cfg)
    base, gguf, tokenizer = base_and_tokenizer(cfg)
    pairs, held_out = split_pairs(cfg, tokenizer, echo)
    transformers.set_seed(cfg.seed)
    model = ValueHeadModel(load_model(cfg, base, gguf))
    for p in model.v_head.parameters():
        p.requires_grad_(True)
    pad_id = pad_token_id(tokenizer)
    trainer = PairwiseTrainer(
        model=model, args=training_arguments(cfg, bool(held_out)), train_dataset=ListDataset(pairs),
        eval_dataset=ListDataset(held_out) if held_out else None,
        data_collator=lambda batch: collate_scored_pairs(batch, pad_id),
        callbacks=[JsonlLogCallback(Path(cfg.output_dir))],
    )
    install_optimizer(trainer, cfg, model)  # the value head is trained too (it is a parameter of the wrapper)
    with torch.enable_grad():
        trainer.train(resume_from_checkpoint=resume)
    if held_out:
        metrics = pair_metrics(model, trainer.eval_dataset, trainer.data_collator)
        echo(f"held-out pairs: loss {metrics['eval_loss']:.4f}, accuracy {metrics['eval_accuracy']:.4f}")
    out = Path(cfg.output_dir)
    save_reward_model(model, out)
    save_side_files(cfg, base, tokenizer, out)
    plot_loss(out / LOG_FILE)
    return out


def save_reward_model(model: ValueHeadModel, out: Path) -> None:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    if hasattr(model.lm, "peft_config"):
        model.lm.save_pretrained(str(out), save_embedding_layers=False)
    else:
        model.lm.save_pretrained(str(out))
    head = {"v_head.summary.weight": model.v_head.weight, "v_head.summary.bias": model.v_head.bias}
    save_file({k: v.detach().contiguous().cpu() for k, v in head.items()}, str(out / VALUE_HEAD_FILE))
