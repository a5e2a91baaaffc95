"""LLaMA-Factory's reweighted SFT losses: DFT, EAFT and ASFT, as per-token weights and a KL term.

For: the token weights `SftTrainer` (fast_loss.py) multiplies into each labelled token's cross-entropy, and the
ASFT anchor. All three follow LLaMA-Factory's `train/trainer_utils.py`:
- DFT (`use_dft_loss`): weight = p(target), i.e. exp(-loss), held constant in backward.
- EAFT (`use_eaft_loss`, `eaft_alpha`, default 1.0): weight = (H / 3) ** alpha, where H is the entropy of the
  model's next-token distribution restricted to its 20 most likely tokens (renormalised), held constant. Confident
  positions (low entropy) count less, uncertain ones more.
- ASFT (`use_asft_loss`, `asft_alpha`, default 0.1): the DFT loss plus alpha x KL(reference || policy), the KL of
  each labelled position's full next-token distribution, averaged like the loss. LF's reference is the frozen
  starting model; here too (for LoRA/OFT the base with the adapter switched off, which LF does not support).

Not for: the label-only LM head and chunking (fast_loss.py), or preference losses (dpo.py).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

EAFT_TOP_K = 20  # LF: the entropy is approximated over the 20 largest logits
EAFT_ENTROPY_SCALE = 3.0  # LF divides the top-20 entropy by 3 before raising it to alpha

TokenWeight = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (float32 (n, V) logits, (n,) losses) -> (n,)


def dft_weight(logits: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
    """DFT: each token's loss weighted by the probability the model gives its target, without gradient."""
    return torch.exp(-losses).detach()


def eaft_weight(alpha: float) -> TokenWeight:
    """EAFT: weight (top-20 entropy / 3) ** alpha, without gradient."""

    def weight(logits: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            top = torch.topk(logits.detach(), k=min(EAFT_TOP_K, logits.shape[-1]), dim=-1).values
            log_p = top - torch.logsumexp(top, dim=-1, keepdim=True)
            entropy = -(log_p.exp() * log_p).sum(dim=-1)
            return torch.pow(entropy / EAFT_ENTROPY_SCALE, alpha)

    return weight


def token_weight(dft: bool, eaft_alpha: float | None) -> TokenWeight | None:
    """The weight the config asks for (ASFT uses DFT's), or None for plain cross-entropy."""
    if eaft_alpha is not None:
        return eaft_weight(eaft_alpha)
    return dft_weight if dft else None


def summed_kl(policy_logits: torch.Tensor, ref_logits: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Sum over rows of KL(softmax(ref) || softmax(policy)) for (N, V) logits, in float32 chunks (ASFT's anchor)."""
    total = policy_logits.new_zeros((), dtype=torch.float32)
    for start in range(0, policy_logits.shape[0], chunk):
        log_p = F.log_softmax(policy_logits[start:start + chunk].float(), dim=-1)
        log_q = F.log_softmax(ref_logits[start:start + chunk].float(), dim=-1)
        total = total + F.kl_div(log_p, log_q, reduction="sum", log_target=True)
    return total


def reference_logits(model, ref_model, inputs: dict, keep: torch.Tensor) -> torch.Tensor:
    """ASFT's reference logits at the labelled positions: `ref_model` (a frozen copy of the starting weights), or,
    when None, `model` itself with its peft adapter switched off."""
    with torch.no_grad():
        if ref_model is not None:
            return ref_model(**inputs, logits_to_keep=keep).logits
        with model.disable_adapter():
            return model(**inputs, logits_to_keep=keep).logits


def use_reweighted_loss(trainer, cfg, model) -> None:
    """Set `SftTrainer` up for use_eaft_loss or use_asft_loss; ASFT keeps a frozen copy of the starting model as its
    reference unless the model carries a peft adapter (then the reference is the model with the adapter off)."""
    if cfg.use_eaft_loss:
        trainer.eaft_alpha = cfg.eaft_alpha
    if cfg.use_asft_loss:
        trainer.asft_alpha = cfg.asft_alpha
        if not hasattr(model, "peft_config"):
            import copy

            ref = copy.deepcopy(model).eval()
            for p in ref.parameters():
                p.requires_grad_(False)
            trainer.ref_model = ref
