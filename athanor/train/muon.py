"""The Muon optimizer as LLaMA-Factory uses it (`use_muon: true`): Muon on 2-D hidden weights, AdamW on the rest.

For: `muon_optimizer(cfg, model)`. LF's split (train/trainer_utils.py `_create_muon_optimizer`): a trainable
parameter goes to Muon when it is 2-D and its name holds neither "embed" nor "lm_head"; everything else (norms,
biases, embeddings, the LM head) goes to AdamW. Both use learning_rate and weight_decay; AdamW uses adam_beta1/2
and adam_epsilon. The Muon half is torch's own `torch.optim.Muon` (torch >= 2.9) with
`adjust_lr_fn="match_rms_adamw"`, the Moonlight scaling LF's vendored copy applies (lr x 0.2 x sqrt(max(rows,
cols)), so one learning rate suits both halves); momentum 0.95, Nesterov, 5 quintic Newton-Schulz steps, as LF.
`MuonWithAdamW` presents the two torch optimizers as one, so transformers' scheduler, clipping, checkpointing
and resume see ordinary param groups.

Not for: choosing among LF's other custom optimizers (optimizers.py's custom_optimizer is the one seam).
"""

from __future__ import annotations

from typing import Any

import torch


def is_muon_param(name: str, param: torch.Tensor) -> bool:
    """LF's rule: 2-D weights that are neither the embedding nor the LM head."""
    return param.ndim == 2 and "embed" not in name and "lm_head" not in name


class MuonWithAdamW(torch.optim.Optimizer):
    """torch.optim.Muon over `muon_params` and torch.optim.AdamW over `adamw_params`, stepped together. The param
    groups are the inner optimizers' own dicts, so a learning-rate schedule reaches both."""

    def __init__(self, muon_params: list[torch.Tensor], adamw_params: list[torch.Tensor], *, lr: float,
                 weight_decay: float, betas: tuple[float, float], eps: float) -> None:
        self.inner: list[torch.optim.Optimizer] = []
        if muon_params:
            self.inner.append(torch.optim.Muon(muon_params, lr=lr, weight_decay=weight_decay,
                                               adjust_lr_fn="match_rms_adamw"))
        if adamw_params:
            self.inner.append(torch.optim.AdamW(adamw_params, lr=lr, weight_decay=weight_decay, betas=betas, eps=eps))
        if not self.inner:
            raise ValueError("use_muon: the model has no trainable parameters")
        super().__init__([*muon_params, *adamw_params], {"lr": lr, "weight_decay": weight_decay})
        self._link_groups()

    def _link_groups(self) -> None:
        self.param_groups = [group for opt in self.inner for group in opt.param_groups]

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for opt in self.inner:
            opt.step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        return {"inner": [opt.state_dict() for opt in self.inner]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("inner", [])
        if len(saved) != len(self.inner):
            raise ValueError(f"optimizer state holds {len(saved)} Muon/AdamW halves, this run has {len(self.inner)}")
        for opt, state in zip(self.inner, saved, strict=True):
            opt.load_state_dict(state)
        self._link_groups()  # load_state_dict rebuilds the inner group dicts

    @property
    def muon_count(self) -> int:
        muon = [opt for opt in self.inner if isinstance(opt, torch.optim.Muon)]
        return sum(len(g["params"]) for opt in muon for g in opt.param_groups)


def muon_optimizer(cfg: Any, model: Any) -> MuonWithAdamW:
    """The optimizer for `use_muon: true`, split over the model's trainable parameters as LLaMA-Factory splits them."""
    muon, adamw = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (muon if is_muon_param(name, param) else adamw).append(param)
    return MuonWithAdamW(muon, adamw, lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                         betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_epsilon)
