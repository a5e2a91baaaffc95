"""Data parallel training on 2 CPU processes (gloo) through the real `accelerate launch`, against one process.

`accelerate launch --config_file recipes/accelerate/ddp.yaml --num_processes 2 -m athanor.cli train` of a LoRA
and a full fine-tune of the tiny model, per_device_train_batch_size 2 (global batch 4), must give the loss curve
of `--num_processes 1` with per_device_train_batch_size 4 (same global batch, same rows per step): the loss is
the mean over the global batch's labelled tokens on both sides (fast_loss.py scales by the process count), so
the curves agree to float rounding. The output is written once (one log line per step, one adapter, one
checkpoint per save), and a checkpoint resumes under the other process count onto the same curve.
Three launches per fine-tuning type, six in all: about two and a half minutes on 2 shared cores.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DDP = ROOT / "recipes" / "accelerate" / "ddp.yaml"
GLOBAL_BATCH, MAX_STEPS = 4, 4
pytest.importorskip("accelerate")


def _accelerate() -> str:
    exe = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")
    if exe is None:
        pytest.skip("the accelerate command is not installed")
    return exe


def _write_data(work: Path) -> None:
    """Alpaca records (LLaMA-Factory's format) of varied lengths, so per-process token counts differ."""
    rows = [{"instruction": f"question {i}: " + "why " * (i % 5), "input": "",
             "output": f"answer {i} " + "because " * (i % 3 + 1)} for i in range(16)]
    (work / "data.json").write_text(json.dumps(rows, indent=1))


def _run(work: Path, model: Path, name: str, num_processes: int, finetuning: str, resume: Path | None = None,
         port: int = 29533, checkpoints: bool = True) -> Path:
    out = work / name
    cfg = {"model_name_or_path": str(model), "stage": "sft", "finetuning_type": finetuning,
           "dataset": "data.json", "cutoff_len": 64, "output_dir": str(out), "seed": 0, "learning_rate": 1.0e-3,
           "per_device_train_batch_size": GLOBAL_BATCH // num_processes, "max_steps": MAX_STEPS,
           "logging_steps": 1, "save_steps": 2, "lr_scheduler_type": "cosine"}
    if not checkpoints:  # a full SmolLM2 checkpoint with optimizer state is ~1.6 GB
        cfg["save_strategy"] = "no"
    if resume is not None:  # a fresh folder holding only the other run's checkpoint
        shutil.copytree(resume, out / resume.name)
        cfg["resume_from_checkpoint"] = str(out / resume.name)
    (work / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [_accelerate(), "launch", "--config_file", str(DDP), "--num_processes", str(num_processes),
           "--main_process_port", str(port), "-m", "athanor.cli", "train", f"{name}.yaml"]
    r = subprocess.run(cmd, env=env, cwd=work, capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert f"distributed: MULTI_CPU, {num_processes} process(es)" in r.stdout, r.stdout[-2000:]
    return out


def _losses(out: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "loss" in r]
    assert len(steps) == len(set(steps)), f"a step was logged twice: {steps}"  # written once, not per process
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


@pytest.mark.parametrize("finetuning", ["lora", "full"])
def test_two_processes_match_one_and_resume_across_process_counts(tiny_hf_dir, tmp_path, finetuning):
    _write_data(tmp_path)
    one = _run(tmp_path, tiny_hf_dir, "one", 1, finetuning)
    two = _run(tmp_path, tiny_hf_dir, "two", 2, finetuning, port=29534)
    ref, par = _losses(one), _losses(two)
    assert sorted(ref) == sorted(par) == list(range(1, MAX_STEPS + 1))
    assert [par[s] for s in ref] == pytest.approx([ref[s] for s in ref], rel=1e-5, abs=1e-5)
    assert len(set(ref.values())) > 1  # the curve moves: the comparison is not of constants

    weights = "adapter_model.safetensors" if finetuning == "lora" else "model.safetensors"
    assert (two / weights).is_file() and sorted(p.name for p in two.glob("checkpoint-*")) == [
        "checkpoint-2", "checkpoint-4"]
    # resume under the other process count (LoRA: a 2-process checkpoint on 1 process; full: 1 -> 2)
    source, count = (two, 1) if finetuning == "lora" else (one, 2)
    resumed = _losses(_run(tmp_path, tiny_hf_dir, "resumed", count, finetuning, resume=source / "checkpoint-2",
                           port=29535))
    assert sorted(resumed) == [3, 4]
    assert [resumed[3], resumed[4]] == pytest.approx([ref[3], ref[4]], rel=1e-5, abs=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("config", ["fsdp.yaml", "zero2.yaml", "zero3.yaml"])
def test_gpu_configs_train_on_every_visible_gpu(tiny_hf_dir, tmp_path, config):
    """FSDP2 and DeepSpeed ZeRO-2/3 from recipes/accelerate/ on the GPUs present: the run finishes, one log line per
    step, weights written once. Skipped without CUDA (and without deepspeed for the ZeRO configs)."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    if config.startswith("zero"):
        pytest.importorskip("deepspeed")
    _write_data(tmp_path)
    num_gpus = torch.cuda.device_count()
    cfg = {"model_name_or_path": str(tiny_hf_dir), "stage": "sft", "finetuning_type": "full", "dataset": "data.json",
           "cutoff_len": 64, "output_dir": str(tmp_path / "out"), "per_device_train_batch_size": 2, "max_steps": 2,
           "logging_steps": 1, "save_steps": 2, "bf16": True}
    (tmp_path / "gpu.yaml").write_text(yaml.safe_dump(cfg))
    cmd = [_accelerate(), "launch", "--config_file", str(ROOT / "recipes" / "accelerate" / config),
           "--num_processes", str(num_gpus), "-m", "athanor.cli", "train", "gpu.yaml"]
    r = subprocess.run(cmd, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=tmp_path, capture_output=True,
                       text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert sorted(_losses(tmp_path / "out")) == [1, 2]
    assert list((tmp_path / "out").glob("*.safetensors"))
