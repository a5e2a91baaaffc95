"""DPO before/after: held-out preference accuracy and reward margins of a DPO recipe, base vs trained adapter.

Runs the recipe itself (`athanor train`'s run_dpo) and scores the pairs it holds out (eval_dataset or val_size),
before and after:
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
    from athanor.train.dpo import split_pairs

    _, held = split_pairs(cfg, tokenizer, echo=lambda _: None)
    if not held:
        sys.exit("the recipe holds no pairs out: set eval_dataset or val_size")
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


def pair_kinds(cfg, num_pairs: int) -> list[str] | None:
    """The `kind` column of the held-out records (calculator_prefs.py writes one), when eval_dataset has it."""
    from athanor.data.formats import read_records
    from athanor.data.registry import resolve_dataset

    if not cfg.eval_dataset:
        return None
    records = [r for name in cfg.eval_dataset for r in read_records(resolve_dataset(name, cfg.dataset_dir).path)]
    kinds = [r.get("kind") for r in records]
    return kinds if len(kinds) == num_pairs and all(isinstance(k, str) for k in kinds) else None


def print_by_kind(kinds: list[str], c0, r0, c1, r1) -> None:
    print(f"{'kind':8} {'pairs':>5} {'acc. before':>11} {'acc. after':>10} {'margin before':>13} {'margin after':>12}")
    for kind in sorted(set(kinds)):
        i = torch.tensor([k == kind for k in kinds])
        print(f"{kind:8} {int(i.sum()):5d} {(c0[i] > r0[i]).float().mean().item():11.3f} "
              f"{(c1[i] > r1[i]).float().mean().item():10.3f} {(c0[i] - r0[i]).mean().item():13.2f} "
              f"{(c1[i] - r1[i]).mean().item():12.2f}")


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
    kinds = pair_kinds(cfg, len(pairs))
    if kinds:
        print_by_kind(kinds, c0, r0, c1, r1)


if __name__ == "__main__":
    main(sys.argv[1:])
