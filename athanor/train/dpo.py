"""Preference optimisation (stage: dpo) on chosen/rejected pairs: sigmoid (DPO), ipo, orpo and simpo losses.

For: `run_dpo(cfg)`, the same shape as sft.py (config -> data -> model -> train -> save) with a loss over pairs.
Each pair is rendered with the model's own template; only the final reply is scored (history turns are prompt).
The reference model of sigmoid/ipo is the base itself: the LoRA adapter switched off (no second copy in memory),
or a frozen copy for full/freeze tuning. orpo and simpo need no reference.

Not for: SFT (sft.py) or reward models. trl is not used: the losses are a few lines each and this keeps the
data path (templates, labels, stop tokens) identical to SFT's.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import transformers

from athanor.errors import AthanorError
from athanor.text.tokenizer import Tokenizer
from athanor.train.callbacks import LOG_FILE, JsonlLogCallback, plot_loss
from athanor.train.config import TrainConfig
from athanor.train.encode import IGNORE_INDEX, Example, collate, encode_conversation
from athanor.train.optimizers import install_optimizer
from athanor.train.sft import (
    ListDataset,
    _split,
    base_and_tokenizer,
    describe_launch,
    load_model,
    pad_token_id,
    resume_arg,
    save_model,
    save_pissa_init,
    save_side_files,
    training_arguments,
)

SIMPO_GAMMA = 0.5  # target reward margin of SimPO (its paper's default ratio gamma/beta ~ 0.5 at beta 1-2)


def run_dpo(cfg: TrainConfig, echo: Callable[[str], None] = print) -> Path:
    assert cfg.stage == "dpo", "run_dpo only runs stage: dpo"
    # 1. Base model and tokenizer.
    resume = resume_arg(cfg, echo)
    base, gguf, tokenizer = base_and_tokenizer(cfg)
    # 2. Pairs: validate, render, keep only the final reply as the scored part.
    pairs, held_out = split_pairs(cfg, tokenizer, echo)
    if held_out:
        echo(f"{len(pairs)} training pairs, {len(held_out)} held out for rewards/accuracies")
    # 3. Policy (+ a frozen reference when the adapter cannot simply be switched off).
    model = load_model(cfg, base, gguf)
    save_pissa_init(cfg, model)
    ref = None if cfg.finetuning_type == "lora" or cfg.pref_loss in ("orpo", "simpo") else _frozen_copy(model)
    # 4. Train.
    pad_id = pad_token_id(tokenizer)
    trainer = PreferenceTrainer(
        model=model, args=training_arguments(cfg, bool(held_out)), train_dataset=ListDataset(pairs),
        eval_dataset=ListDataset(held_out) if held_out else None,
        data_collator=lambda batch: collate_pairs(batch, pad_id), callbacks=[JsonlLogCallback(Path(cfg.output_dir))],
    )
    install_optimizer(trainer, cfg, model)
    trainer.setup_preference(cfg.pref_loss, cfg.pref_beta, ref)
    if launch := describe_launch(trainer.args):
        echo(launch)
    with torch.enable_grad():  # see sft.run_sft: our inference engine turns autograd off process-wide
        trainer.train(resume_from_checkpoint=resume)
    if held_out:  # the final numbers (transformers may have just evaluated the last step itself)
        done = [h for h in trainer.state.log_history
                if "eval_rewards/accuracies" in h and h.get("step") == trainer.state.global_step]
        metrics = done[-1] if done else trainer.evaluate()
        echo("held-out " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k.startswith("eval_")))
    # 5. Save.
    out = Path(cfg.output_dir)
    save_model(trainer, out)
    save_side_files(cfg, base, tokenizer, out)
    plot_loss(out / LOG_FILE)
    return out


def split_pairs(cfg: TrainConfig, tokenizer: Tokenizer, echo: Callable[[str], None] = print
                ) -> tuple[list[tuple[Example, Example]], list[tuple[Example, Example]]]:
    """(training pairs, held-out pairs): eval_dataset when the config names one, else a val_size split."""
    pairs = build_pairs(cfg, tokenizer, echo)
    if cfg.eval_dataset:
        return pairs, build_pairs(cfg, tokenizer, echo, cfg.eval_dataset)
    return _split(pairs, cfg.val_size, cfg.seed)


def build_pairs(cfg: TrainConfig, tokenizer: Tokenizer, echo: Callable[[str], None] = print,
                names: list[str] | None = None) -> list[tuple[Example, Example]]:
    """The preference datasets `names` (default: cfg.dataset), validated and encoded."""
    from athanor.data.formats import PreferencePair
    from athanor.data.registry import load_datasets

    samples, reports = load_datasets(names or cfg.dataset, cfg.dataset_dir, cfg.max_samples)
    for report in reports:
        echo(f"dataset {report.summary()}")
    assert all(isinstance(s, PreferencePair) for s in samples), "config checks keep sft data out of dpo"
    pairs = [encode_pair(tokenizer, s, None, cfg.cutoff_len) for s in samples]
    pairs = [p for p in pairs if p[0].num_label_tokens and p[1].num_label_tokens]
    if not pairs:
        raise AthanorError(f"no pair keeps reply tokens within cutoff_len={cfg.cutoff_len}; raise it")
    echo(f"{len(pairs)} preference pairs")
    return pairs


def encode_pair(tokenizer: Tokenizer, pair: Any, chat_template: str | None = None,
                cutoff_len: int | None = None) -> tuple[Example, Example]:
    """(chosen, rejected) examples whose labels cover only the final reply and its stop token."""
    return tuple(_last_turn_only(encode_conversation(tokenizer, pair.prompt + [reply], pair.tools,
                                                     chat_template=chat_template, cutoff_len=cutoff_len))
                 for reply in (pair.chosen, pair.rejected))


def _last_turn_only(ex: Example) -> Example:
    labels = list(ex.labels)
    k = len(labels)
    while k > 0 and labels[k - 1] == IGNORE_INDEX:  # skip text after the last reply
        k -= 1
    while k > 0 and labels[k - 1] != IGNORE_INDEX:  # walk back over the last reply
        k -= 1
    labels[:k] = [IGNORE_INDEX] * k
    return Example(ex.input_ids, labels)


def collate_pairs(batch: list[tuple[Example, Example]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """B pairs -> one batch of 2B rows: chosen rows first, then rejected rows."""
    return collate([c for c, _ in batch] + [r for _, r in batch], pad_token_id)


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of log-probabilities of the labelled tokens per row, and their count: (N,), (N,)."""
    logits, labels = logits[:, :-1], labels[:, 1:]  # position t predicts token t+1
    mask = labels != IGNORE_INDEX  # (N, T-1)
    picked = torch.gather(logits.log_softmax(-1), 2, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # (N, T-1)
    return (picked * mask).sum(-1), mask.sum(-1)


def preference_loss(kind: str, beta: float, chosen: torch.Tensor, rejected: torch.Tensor, num_chosen: torch.Tensor,
                    num_rejected: torch.Tensor, ref_chosen: torch.Tensor | None = None,
                    ref_rejected: torch.Tensor | None = None) -> torch.Tensor:
    """Mean loss over pairs; inputs are per-pair summed log-probs (B,) and token counts (B,)."""
    if kind == "sigmoid":  # DPO (Rafailov et al. 2023)
        margin = (chosen - ref_chosen) - (rejected - ref_rejected)
        return -F.logsigmoid(beta * margin).mean()
    avg_chosen, avg_rejected = chosen / num_chosen, rejected / num_rejected
    if kind == "ipo":  # IPO (Azar et al. 2023), on length-normalised log-ratios as in trl
        margin = (avg_chosen - ref_chosen / num_chosen) - (avg_rejected - ref_rejected / num_rejected)
        return ((margin - 1 / (2 * beta)) ** 2).mean()
    if kind == "simpo":  # SimPO (Meng et al. 2024): no reference, length-normalised, target margin gamma
        return -F.logsigmoid(beta * (avg_chosen - avg_rejected) - SIMPO_GAMMA).mean()
    assert kind == "orpo", kind  # ORPO (Hong et al. 2024): NLL on chosen + beta x log odds-ratio term
    log_odds = (avg_chosen - avg_rejected) - (torch.log1p(-avg_chosen.exp()) - torch.log1p(-avg_rejected.exp()))
    return (-avg_chosen - beta * F.logsigmoid(log_odds)).mean()


def _frozen_copy(model: Any) -> Any:
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


class PreferenceTrainer(transformers.Trainer):
    """transformers.Trainer with the preference loss; everything else (schedule, checkpoints, resume) unchanged."""

    def setup_preference(self, kind: str, beta: float, ref_model: Any | None) -> None:
        self.pref_kind, self.pref_beta, self.ref_model = kind, beta, ref_model

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, _, _, logits = self._pair_stats(model, inputs)
        return (loss, {"logits": logits}) if return_outputs else loss

    def _pair_stats(self, model: Any, inputs: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mean loss, rewards of chosen (B,), rewards of rejected (B,), logits). A reward is beta x the policy's
        log-probability ratio to the reference (sigmoid, ipo) or beta x its mean token log-prob (orpo, simpo)."""
        labels = inputs["labels"]
        num_pairs = labels.shape[0] // 2
        logits = model(input_ids=inputs["input_ids"], position_ids=inputs["position_ids"]).logits  # (2B, T, V)
        logps, counts = sequence_logps(logits.float(), labels)
        ref_c = ref_r = None
        if self.pref_kind in ("sigmoid", "ipo"):
            ref_logps = self._reference_logps(model, inputs)
            ref_c, ref_r = ref_logps[:num_pairs], ref_logps[num_pairs:]
            rewards = self.pref_beta * (logps - ref_logps).detach()
        else:
            rewards = self.pref_beta * (logps / counts).detach()
        loss = preference_loss(self.pref_kind, self.pref_beta, logps[:num_pairs], logps[num_pairs:],
                               counts[:num_pairs], counts[num_pairs:], ref_c, ref_r)
        return loss, rewards[:num_pairs], rewards[num_pairs:], logits

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval") -> dict[str, float]:
        """Held-out loss and rewards/chosen, rewards/rejected, rewards/accuracies (chosen above rejected),
        rewards/margins; logged (so trainer_log.jsonl has them) and returned."""
        metrics = self.preference_metrics(eval_dataset if eval_dataset is not None else self.eval_dataset,
                                          metric_key_prefix)
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    @torch.no_grad()
    def preference_metrics(self, dataset: Any, prefix: str = "eval") -> dict[str, float]:
        was_training = self.model.training
        self.model.eval()
        losses, chosen, rejected = [], [], []
        try:
            for inputs in self.get_eval_dataloader(dataset):
                inputs = self._prepare_inputs(inputs)
                loss, c, r, _ = self._pair_stats(self.model, inputs)
                losses.append(loss.item() * c.numel())
                chosen.append(c.float().cpu())
                rejected.append(r.float().cpu())
        finally:
            self.model.train(was_training)
        c, r = torch.cat(chosen), torch.cat(rejected)
        return {f"{prefix}_loss": sum(losses) / c.numel(), f"{prefix}_rewards/chosen": c.mean().item(),
                f"{prefix}_rewards/rejected": r.mean().item(),
                f"{prefix}_rewards/accuracies": (c > r).float().mean().item(),
                f"{prefix}_rewards/margins": (c - r).mean().item()}

    @torch.no_grad()
    def _reference_logps(self, model: Any, inputs: dict) -> torch.Tensor:
        kwargs = {"input_ids": inputs["input_ids"], "position_ids": inputs["position_ids"]}
        if self.ref_model is not None:
            logits = self.ref_model(**kwargs).logits
        else:
            with model.disable_adapter():  # the base is the reference: LoRA off
                logits = model(**kwargs).logits
        return sequence_logps(logits.float(), inputs["labels"])[0]
