"""The multi-process path on one process: `accelerate launch --num_processes 1 --config_file <shipped config> -m
athanor.cli train` trains the tiny model for 2 steps through accelerate's launcher (torchrun, a process group).

What runs on this CPU-only machine: recipes/accelerate/fsdp.yaml through the real launcher. accelerate sets the FSDP
environment, but on CPU its Accelerator runs the process as MULTI_CPU (gloo), so FSDP sharding itself is not
exercised here; the test asserts what did run. DeepSpeed ZeRO-2 (zero2.yaml) needs deepspeed and CUDA: it runs
under the gpu mark; on CPU both configs are only parsed by accelerate (test_train_config.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "recipes" / "accelerate"
DATA = [{"instruction": "capital of France?", "output": "Paris."}, {"instruction": "hello", "output": "hello world"}]

pytest.importorskip("accelerate")


def _accelerate() -> str:
    exe = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")
    if exe is None:
        pytest.skip("the accelerate command is not installed")
    return exe


def _train_yaml(work: Path, model: Path) -> Path:
    (work / "data.jsonl").write_text("\n".join(json.dumps(r) for r in DATA * 4))
    path = work / "sft.yaml"
    path.write_text(yaml.safe_dump({
        "model_name_or_path": str(model), "stage": "sft", "dataset": "data.jsonl", "cutoff_len": 64,
        "output_dir": str(work / "out"), "per_device_train_batch_size": 2, "max_steps": 2, "logging_steps": 1,
        "save_steps": 100, "seed": 0}))
    return path


def _launch(config: Path, train_yaml: Path, extra: list[str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [_accelerate(), "launch", *(extra or []), "--num_processes", "1", "--num_machines", "1",
           "--config_file", str(config), "-m", "athanor.cli", "train", str(train_yaml)]
    return subprocess.run(cmd, env=env, cwd=train_yaml.parent, capture_output=True, text=True, timeout=240,
                          check=False)


def test_fsdp_config_launches_a_two_step_run_on_one_process(tiny_hf_dir, tmp_path):
    result = _launch(CONFIGS / "fsdp.yaml", _train_yaml(tmp_path, tiny_hf_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    # our run_sft names the setup only when a launcher started it: proof this went through torchrun + accelerate
    assert "distributed: MULTI_CPU, 1 process(es), this is rank 0" in result.stdout, result.stdout
    assert "done: train loss" in result.stdout
    out = tmp_path / "out"
    losses = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in losses if "loss" in r] == [1, 2]
    assert (out / "adapter_model.safetensors").is_file() and (out / "checkpoint-2").is_dir()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="DeepSpeed ZeRO-2 needs CUDA")
def test_zero2_config_launches_on_one_gpu(tiny_hf_dir, tmp_path):
    pytest.importorskip("deepspeed")
    result = _launch(CONFIGS / "zero2.yaml", _train_yaml(tmp_path, tiny_hf_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "distributed: DEEPSPEED, 1 process(es)" in result.stdout
