"""The SFT / pretraining loss computed only where it counts: the LM head runs on labelled positions alone.

For: `SftTrainer`, a `transformers.Trainer` whose `compute_loss` asks the model for logits only at positions whose
next token is a label (transformers' `logits_to_keep` with a boolean (B, T) mask) and takes the cross-entropy
over those rows in chunks. In chat SFT most tokens are prompt (system prompt, tool specs, user turns); the
vocabulary projection (49k x 576 for SmolLM2, a fifth of its weights) and the (tokens x vocab) logits tensor are
then mostly wasted work and memory. The loss is the same number transformers computes (mean over labelled
tokens; with gradient accumulation divided by the whole accumulated count), just cheaper.

Not for: preference losses (dpo.py scores whole replies) or models with logit soft-capping (Gemma 2), which fall
back to the plain loss.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
import transformers

from athanor.errors import AthanorError
from athanor.train.encode import IGNORE_INDEX
from athanor.train.sft_losses import TokenWeight, dft_weight, reference_logits, summed_kl, token_weight

CE_CHUNK = 4096  # labelled rows per cross-entropy chunk: bounds the float32 upcast of (rows x vocab) logits


def label_positions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(keep (B, T) bool: positions whose next token is a label, targets (N,): those next tokens, row-major)."""
    targets = labels[:, 1:]
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = targets != IGNORE_INDEX
    return keep, targets[targets != IGNORE_INDEX]


def summed_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, chunk: int = CE_CHUNK,
                         dft: bool = False, weight: TokenWeight | None = None) -> torch.Tensor:
    """Sum of token cross-entropies of (N, V) logits, upcast to float32 one chunk of rows at a time. `dft`
    (LLaMA-Factory's use_dft_loss, Dynamic Fine-Tuning): each token's loss is weighted by its own probability,
    exp(-loss), held constant in backward; `weight` is any such per-token weight (sft_losses.py: EAFT)."""
    weight = weight or (dft_weight if dft else None)
    if logits.shape[0] == 0:  # no label in this micro-batch: a zero that still belongs to the graph
        return logits.sum().float() * 0.0
    total = logits.new_zeros((), dtype=torch.float32)
    for start in range(0, logits.shape[0], chunk):
        part = logits[start:start + chunk].float()
        losses = F.cross_entropy(part, targets[start:start + chunk], reduction="none")
        total = total + (losses * weight(part, losses) if weight is not None else losses).sum()
    return total


def supports_label_only_head(model: Any) -> bool:
    config = getattr(model, "config", None)
    return config is not None and not getattr(config, "final_logit_softcapping", None)


class SftTrainer(transformers.Trainer):
    """transformers.Trainer with the label-only LM head; schedule, checkpoints, resume and eval loss unchanged."""

    dft_loss = False  # LLaMA-Factory's use_dft_loss
    eaft_alpha: float | None = None  # use_eaft_loss: eaft_alpha (sft_losses.py)
    asft_alpha: float | None = None  # use_asft_loss: asft_alpha; the DFT loss plus alpha x KL to the reference
    ref_model: Any = None  # ASFT's frozen starting model (None with a peft adapter: the adapter is switched off)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.get("labels")
        dft, eaft, asft = (getattr(self, k, None) for k in ("dft_loss", "eaft_alpha", "asft_alpha"))
        reweighted = dft or eaft is not None or asft is not None
        if labels is None or not supports_label_only_head(self.accelerator.unwrap_model(model)):
            if reweighted:
                raise AthanorError("use_dft_loss/use_eaft_loss/use_asft_loss need the label-only LM head, which "
                                   "this model cannot use")
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        keep, targets = label_positions(labels)
        kwargs = {k: v for k, v in inputs.items() if k != "labels"}
        outputs = model(**kwargs, logits_to_keep=keep)  # through the (maybe DDP-wrapped) forward: grads sync
        total = summed_cross_entropy(outputs.logits, targets, weight=token_weight(bool(dft) or asft is not None, eaft))
        if asft is not None:
            ref = reference_logits(self.accelerator.unwrap_model(model), getattr(self, "ref_model", None), kwargs, keep)
            total = total + asft * summed_kl(outputs.logits, ref)
        if num_items_in_batch is not None:  # gradient accumulation: divide by every micro-batch's label count
            loss = total / num_items_in_batch
            if self.args.average_tokens_across_devices and self.accelerator.num_processes > 1:
                loss = loss * self.accelerator.num_processes  # DDP averages gradients over processes
        else:
            loss = total / max(int(targets.numel()), 1)
        return (loss, outputs) if return_outputs else loss
