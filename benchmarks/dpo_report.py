"""DPO before/after: held-out preference accuracy and reward margins of a DPO recipe, base vs trained adapter.

Runs the recipe itself (`athanor train`'s run_dpo) and scores the pairs it held out (val_size), before and after:
  - preference accuracy: share of held-out pairs where the model gives the chosen reply a higher summed
    log-probability than the rejected one (defined for the base too, unlike DPO rewards, which are 0 there);
  - mean log-prob margin log p(chosen) - log p(rejected);
  - after training, DPO rewards (beta x policy/reference log-ratio): accuracy and margin, as trainer_log.jsonl has.

Usage: python benchmarks/dpo_report.py [recipes/smollm2-calculator/dpo.yaml] [key=value ...]
Record the printed table in benchmarks/RESULTS.md with date, machine and command.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def held_out_pairs(cfg, tokenizer):
    from athanor.train.dpo import build_pairs
    from athanor.train.sft import _split

    _, held = _split(build_pairs(cfg, tokenizer, echo=lambda _: None), cfg.val_size, cfg.seed)
    if not held:
        sys.exit("the recipe holds no pairs out: set val_size")
    return held


@torch.no_grad()
def pair_logps(model, pairs, pad_id: int, batch: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    from athanor.train.dpo import collate_pairs, sequence_logps

    chosen, rejected = [], []
    for i in range(0, len(pairs), batch):
        b = collate_pairs(pairs[i:i + batch], pad_id)
        logits = model(input_ids=b["input_ids"], position_ids=b["position_ids"], use_cache=False).logits
        logps = sequence_logps(logits.float(), b["labels"])[0]
        n = len(pairs[i:i + batch])
        chosen.append(logps[:n])
        rejected.append(logps[n:])
    return torch.cat(chosen), torch.cat(rejected)


def main(argv: list[str]) -> None:
    from peft import PeftModel

    from athanor.models.loader import load_checkpoint
    from athanor.train.config import load_config
    from athanor.train.dpo import run_dpo
    from athanor.train.sft import _model_from_gguf, pad_token_id, resolve_base

    config = Path(argv[0]) if argv and not argv[0].count("=") else ROOT / "recipes/smollm2-calculator/dpo.yaml"
    overrides = [a for a in argv if "=" in a]
    cfg = load_config(config, overrides)
    base_path = resolve_base(cfg.model_name_or_path)
    gguf = load_checkpoint(base_path)
    pairs = held_out_pairs(cfg, gguf.tokenizer)
    pad = pad_token_id(gguf.tokenizer)
    base = _model_from_gguf(base_path, gguf).eval()
    c0, r0 = pair_logps(base, pairs, pad)
    start = time.perf_counter()
    out = run_dpo(cfg, echo=print)
    seconds = time.perf_counter() - start
    trained = PeftModel.from_pretrained(base, str(out)).eval()
    c1, r1 = pair_logps(trained, pairs, pad)
    rc, rr = cfg.pref_beta * (c1 - c0), cfg.pref_beta * (r1 - r0)
    print(f"\n# DPO report: {config} ({cfg.pref_loss}, beta {cfg.pref_beta}, {cfg.max_steps} steps, "
          f"{len(pairs)} held-out pairs, training {seconds:.0f} s)")
    print(f"{'':8} {'pref. accuracy':>14} {'logp margin':>12}")
    print(f"{'before':8} {(c0 > r0).float().mean().item():14.3f} {(c0 - r0).mean().item():12.3f}")
    print(f"{'after':8} {(c1 > r1).float().mean().item():14.3f} {(c1 - r1).mean().item():12.3f}")
    print(f"after: rewards/chosen {rc.mean().item():.3f}, rewards/rejected {rr.mean().item():.3f}, "
          f"rewards/accuracies {(rc > rr).float().mean().item():.3f}, rewards/margins {(rc - rr).mean().item():.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
