"""LoRA SFT throughput and peak memory: `athanor train`'s path vs a plain transformers.Trainer + peft, same run.

Both sides train the same LoRA (rank 16, all linear layers) on the same base (SmolLM2-135M-Instruct, dequantized
from the built-in GGUF by our loader), over the same tokenized samples (our template rendering and label mask),
the same number of samples per optimizer step, fp32, for the same number of steps:
  - ours: what `athanor train` runs: each step's samples packed (best-fit decreasing) into rows of at most
    --pack-width tokens (default 4096: a step's samples share one row), positions restarting per sample, attention
    computed per sample of a row (packed_attention.py), the LM head only on labelled positions (fast_loss.py);
  - baseline: one padded row per sample (DataCollatorForSeq2Seq, pad to the batch's longest), transformers'
    own causal-LM loss over the full vocabulary at every position.
tokens/s counts real (non-padding) tokens over the timed steps (the first step is warm-up and not timed).
Each side runs in its own subprocess, so peak RSS (ru_maxrss) is its own; "train peak" is peak RSS minus RSS
just before training (weights and data loading are the same on both sides).

`--data mixed` writes and uses a set with a realistic length spread: multi-turn calculator chats of 1 to 8
exchanges (~190 to ~750 tokens), where padding to the longest sample of a batch costs the baseline most.
`--gradient-checkpointing` turns it on for ours only (the baseline is transformers' default, off).

Usage: python benchmarks/bench_train.py [--samples-per-step 8] [--steps 6] [--data FILE.jsonl|mixed] [--threads N]
       python benchmarks/bench_train.py --interleaved 4 [--samples-per-step 4]   # one process, steps alternating
Record the printed table in benchmarks/RESULTS.md with date, machine, command and `uptime` (the CPU is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT / "recipes" / "smollm2-calculator" / "data" / "calculator_train.jsonl"


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


MIXED_DATA = Path("/tmp/bench_train_mixed.jsonl")
MIXED_TURNS = [1, 1, 1, 2, 2, 3, 4, 6, 8]  # exchanges per chat: mostly short, a long tail


def write_mixed(path: Path, n: int, seed: int = 0) -> Path:
    """`n` multi-turn calculator chats (system + tools, then 1-8 question / call / result / answer exchanges)."""
    import random

    from recipes.calculator.calculator_data import generate, to_record

    rng = random.Random(seed)
    questions = iter(generate(n * max(MIXED_TURNS), seed))
    records = []
    for _ in range(n):
        record = to_record(next(questions))
        for i in range(1, rng.choice(MIXED_TURNS)):
            turns = json.loads(json.dumps(to_record(next(questions))["messages"][1:]).replace("call_0", f"call_{i}"))
            record["messages"] += turns
        records.append(record)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def examples(data: Path, n: int, tokenizer) -> list:
    from athanor.data.registry import load_datasets
    from athanor.train.encode import encode_conversation

    samples, _ = load_datasets([str(data)], str(data.parent), n)
    return [encode_conversation(tokenizer, s.messages, s.tools, cutoff_len=1024) for s in samples]


def run_side(side: str, data: Path, samples_per_step: int, steps: int, checkpointing: bool = False,
             pack_width: int = 4096) -> dict:
    import torch
    import transformers

    from athanor.models.loader import load_checkpoint
    from athanor.models.store import Store
    from athanor.train.config import TrainConfig
    from athanor.train.encode import collate, pack_examples
    from athanor.train.sft import ListDataset, load_model, training_arguments

    base = Path(Store().resolve("smollm2").weights)
    gguf = load_checkpoint(base)
    exs = examples(data, samples_per_step * steps, gguf.tokenizer)
    cfg = TrainConfig(model_name_or_path=str(base), dataset=[str(data)], lora_rank=16, lora_target="all",
                      output_dir=f"/tmp/bench_train_{side}", per_device_train_batch_size=samples_per_step,
                      learning_rate=1e-4, max_steps=steps, logging_steps=1000, save_steps=10_000,
                      lr_scheduler_type="constant", seed=0, gradient_checkpointing=checkpointing and side == "ours")
    model = load_model(cfg, base, gguf, packed_attention=side == "ours")
    times: list[float] = []
    real_tokens: list[int] = []  # per step, counted as each batch is collated (steps run in dataset order)

    class Timer(transformers.TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t)

    if side == "ours":
        from athanor.train.fast_loss import SftTrainer

        # Pack each step's samples into rows of at most pack_width tokens: one item = one step's rows.
        steps_rows = [pack_examples(exs[i * samples_per_step:(i + 1) * samples_per_step], pack_width)
                      for i in range(steps)]
        args = training_arguments(cfg.model_copy(update={"per_device_train_batch_size": 1}), False)
        def collator(items):
            real_tokens.append(sum(len(r.input_ids) for r in items[0]))
            return collate(items[0], 0)

        dataset = ListDataset(steps_rows)
        trainer = SftTrainer(model=model, args=args, train_dataset=dataset, data_collator=collator,
                             callbacks=[Timer()])
    else:
        records = [{"input_ids": e.input_ids, "labels": e.labels, "attention_mask": [1] * len(e.input_ids)}
                   for e in exs]
        args = transformers.TrainingArguments(
            output_dir=cfg.output_dir, per_device_train_batch_size=samples_per_step, max_steps=steps,
            learning_rate=1e-4, lr_scheduler_type="constant", logging_steps=1000, save_strategy="no",
            report_to="none", use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0, seed=0,
            remove_unused_columns=False)
        def collator(features):
            real_tokens.append(sum(len(f["input_ids"]) for f in features))
            return pad_batch(features)

        dataset = ListDataset(records)
        trainer = transformers.Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator,
                                       callbacks=[Timer()])
    # Both sides see the same samples in the same steps: no shuffling (so their losses are comparable too).
    trainer._get_train_sampler = lambda *a, **k: torch.utils.data.SequentialSampler(dataset)
    before = rss_mib()
    with torch.enable_grad():
        out = trainer.train()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    timed = times[1:]  # step 1 is warm-up
    assert len(real_tokens) == len(times) == steps, (len(real_tokens), len(times))
    tps = sum(real_tokens[1:]) / sum(timed)
    return {"side": side, "tokens_per_s": round(tps, 1), "s_per_step": round(sum(timed) / len(timed), 2),
            "peak_rss_mib": round(peak), "train_peak_mib": round(peak - before), "loss": round(out.training_loss, 4),
            "tokens_per_step": round(sum(real_tokens) / steps)}


def pad_batch(features: list[dict]) -> dict:
    """The usual padding collator: right-pad to the batch's longest; labels with -100, attention_mask with 0."""
    import torch

    width = max(len(f["input_ids"]) for f in features)
    pad = {"input_ids": 0, "attention_mask": 0, "labels": -100}
    return {k: torch.tensor([list(f[k]) + [v] * (width - len(f[k])) for f in features]) for k, v in pad.items()}


def interleaved(data: Path, samples_per_step: int, reps: int, pack_width: int = 4096) -> None:
    """One process, the two sides' forward+backward steps alternating on the same LoRA model and batches, so a
    shared, busy CPU slows both alike: the ratio of summed step times is the comparison (no memory numbers)."""
    import torch

    from athanor.models.loader import load_checkpoint
    from athanor.models.store import Store
    from athanor.train.config import TrainConfig
    from athanor.train.encode import collate, pack_examples
    from athanor.train.fast_loss import label_positions, summed_cross_entropy
    from athanor.train.packed_attention import NAME
    from athanor.train.sft import load_model

    base = Path(Store().resolve("smollm2").weights)
    gguf = load_checkpoint(base)
    exs = examples(data, samples_per_step * reps, gguf.tokenizer)
    cfg = TrainConfig(model_name_or_path=str(base), dataset=[str(data)], lora_rank=16, lora_target="all")
    model = load_model(cfg, base, gguf, packed_attention=True).train()
    times = {"baseline": 0.0, "ours": 0.0}
    tokens = 0
    for i in range(reps):
        batch = exs[i * samples_per_step:(i + 1) * samples_per_step]
        tokens += sum(len(e.input_ids) for e in batch)
        for side in ("ours", "baseline") if i % 2 else ("baseline", "ours"):
            # the baseline's attention is transformers' sdpa with the padding mask; ours is packed attention
            model.get_base_model().set_attn_implementation(NAME if side == "ours" else "sdpa")
            with torch.enable_grad():
                t0 = time.perf_counter()
                if side == "ours":
                    inputs = collate(pack_examples(batch, pack_width), 0)
                    keep, targets = label_positions(inputs.pop("labels"))
                    logits = model(**inputs, logits_to_keep=keep).logits
                    loss = summed_cross_entropy(logits, targets) / targets.numel()
                else:
                    inputs = pad_batch([{"input_ids": e.input_ids, "labels": e.labels,
                                         "attention_mask": [1] * len(e.input_ids)} for e in batch])
                    loss = model(**inputs).loss
                loss.backward()
                model.zero_grad(set_to_none=True)
                times[side] += time.perf_counter() - t0
    print(f"# interleaved: {reps} steps per side, {samples_per_step} samples/step, {tokens} real tokens per side")
    for side, t in times.items():
        print(f"{side:9} {tokens / t:8.1f} tokens/s  ({t:.1f} s)")
    print(f"speed-up {times['baseline'] / times['ours']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples-per-step", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="a .jsonl SFT file, or 'mixed'")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="ours: recompute activations")
    parser.add_argument("--pack-width", type=int, default=4096, help="ours: tokens per packed row (cutoff_len)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per side (default: all cores)")
    parser.add_argument("--interleaved", type=int, metavar="REPS", help="alternate the two sides' steps in one "
                        "process REPS times (robust to a busy CPU; no memory numbers)")
    parser.add_argument("--side", choices=["ours", "baseline"], help=argparse.SUPPRESS)  # the subprocess
    args = parser.parse_args()
    if str(args.data) == "mixed":
        args.data = write_mixed(MIXED_DATA, args.samples_per_step * max(args.steps, args.interleaved or 0))
    if args.interleaved:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        interleaved(args.data, args.samples_per_step, args.interleaved, args.pack_width)
        return
    if args.side:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        print(json.dumps(run_side(args.side, args.data, args.samples_per_step, args.steps,
                                  args.gradient_checkpointing, args.pack_width)))
        return
    results = {}
    for side in ("baseline", "ours"):
        cmd = [sys.executable, __file__, "--side", side, "--samples-per-step", str(args.samples_per_step),
               "--steps", str(args.steps), "--data", str(args.data), "--pack-width", str(args.pack_width)] + (
            ["--threads", str(args.threads)] if args.threads else []) + (
            ["--gradient-checkpointing"] if args.gradient_checkpointing else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=os.environ | {"TOKENIZERS_PARALLELISM": "false"})
        if proc.returncode:
            why = " (killed: out of memory?)" if proc.returncode == -9 else ""
            sys.exit(f"{side} failed{why}:\n{proc.stderr[-3000:]}")
        results[side] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"# bench_train: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{args.samples_per_step} samples/step, {args.steps} steps, data {args.data.name}"
          + (", gradient checkpointing (ours)" if args.gradient_checkpointing else ""))
    print(f"{'side':9} {'tokens/s':>9} {'s/step':>7} {'tok/step':>8} {'peak RSS MiB':>12} {'train peak MiB':>14} "
          f"{'loss':>7}")
    for r in results.values():
        print(f"{r['side']:9} {r['tokens_per_s']:9.1f} {r['s_per_step']:7.2f} {r['tokens_per_step']:8d} "
              f"{r['peak_rss_mib']:12d} {r['train_peak_mib']:14d} {r['loss']:7.4f}")
    b, o = results["baseline"], results["ours"]
    print(f"speed-up {o['tokens_per_s'] / b['tokens_per_s']:.2f}x, train peak memory "
          f"{o['train_peak_mib'] / max(b['train_peak_mib'], 1):.2f}x of the baseline")


if __name__ == "__main__":
    main()
