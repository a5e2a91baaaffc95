"""stage: grpo (athanor's extension, on trl's GRPOTrainer): reward functions from `module:function` or
`file.py:function`, the config's refusals in one line each, and one-step runs (tiny model fast, SmolLM2 slow) whose
rewards saw the prompts rendered with the template and the datasets' reference answers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from athanor.train.config import ConfigError, load_config
from athanor.train.run import train
from tests.train.test_lf_configs import COMMON, LORA, write_lf_data_dir

REWARDS = '''
import json, os

def brevity(prompts, completions, **kwargs):
    return [-len(c) / 10.0 for c in completions]

def recorder(prompts, completions, answer, **kwargs):
    with open(os.path.join(os.path.dirname(__file__), "seen.jsonl"), "a") as f:
        for p, c, a in zip(prompts, completions, answer):
            f.write(json.dumps({"prompt": p, "completion": c, "answer": a}) + "\\n")
    return [1.0 if a[:5] in c else 0.0 for c, a in zip(completions, answer)]

def broken(prompts, completions, **kwargs):
    return [1.0]
'''

GRPO = {"stage": "grpo", **LORA, "dataset": "identity", "template": "qwen3_nothink",
        "reward_funcs": "rewards.py:brevity,rewards.py:recorder", "reward_weights": [1.0, 2.0],
        "grpo_num_generations": 2, "grpo_max_completion_length": 6}
ONE_STEP = {"cutoff_len": 128, "max_samples": 2, "max_steps": 1, "logging_steps": 1, "per_device_train_batch_size": 2,
            "gradient_accumulation_steps": 1, "bf16": False}


@pytest.fixture
def lf_dir(tmp_path) -> Path:
    d = write_lf_data_dir(tmp_path)
    (d / "rewards.py").write_text(REWARDS)
    return d


def _write(dir: Path, model: Path, keys: dict) -> Path:
    path = dir / "config.yaml"
    path.write_text(yaml.safe_dump({"model_name_or_path": str(model), **COMMON, **keys, "output_dir": str(dir / "out")},
                                   sort_keys=False))
    return path


def _problems(dir: Path, model: Path, keys: dict) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(_write(dir, model, keys), has_cuda=False)
    assert all("\n" not in p for p in info.value.problems)
    return info.value.problems


def test_grpo_config_is_accepted_with_file_and_module_rewards(lf_dir, tiny_hf_dir, monkeypatch):
    cfg = load_config(_write(lf_dir, tiny_hf_dir, {**GRPO, **ONE_STEP}), has_cuda=False)
    assert cfg.stage == "grpo" and cfg.reward_funcs == ["rewards.py:brevity", "rewards.py:recorder"]
    monkeypatch.syspath_prepend(str(lf_dir))  # `module:function` imports like any Python module
    cfg = load_config(_write(lf_dir, tiny_hf_dir, {**GRPO, **ONE_STEP, "reward_funcs": ["rewards:brevity"],
                                                   "reward_weights": None}), has_cuda=False)
    from athanor.train.grpo import load_reward_func

    assert load_reward_func(cfg.reward_funcs[0])([], ["ab", "abcd"]) == [-0.2, -0.4]


@pytest.mark.parametrize(("keys", "want"), [
    ({"reward_funcs": []}, "reward_funcs: stage: grpo needs at least one reward function"),
    ({"reward_funcs": "rewards.py"},
     "reward_funcs: 'rewards.py': expected module:function or path/to/file.py:function"),
    ({"reward_funcs": "nowhere.py:f"}, "reward_funcs: 'nowhere.py:f': no file nowhere.py (looked in"),
    ({"reward_funcs": "rewards.py:nope"}, "reward_funcs: 'rewards.py:nope': rewards.py has no function 'nope'"),
    ({"reward_funcs": "no_such_module_x:f"},
     "reward_funcs: 'no_such_module_x:f': importing no_such_module_x failed: ModuleNotFoundError"),
    ({"reward_weights": [1.0]}, "reward_weights: 1 weights for 2 reward functions"),
    ({"grpo_num_generations": 3}, ("grpo_num_generations: 3 must divide per_device_train_batch_size x "
                                   "gradient_accumulation_steps = 2")),
    ({"packing": True}, "packing: not supported with stage: grpo"),
    ({"val_size": 0.5}, "val_size: not supported with stage: grpo"),
    ({"dataset": "dpo_en_demo"}, "dataset: dpo_en_demo holds preference pairs"),
])
def test_grpo_refusals_are_one_line_each(lf_dir, tiny_hf_dir, keys, want):
    problems = _problems(lf_dir, tiny_hf_dir, {**GRPO, **ONE_STEP, **keys})
    assert any(p.startswith(want) for p in problems), problems


def test_grpo_keys_on_another_stage_and_a_bad_module_file_are_refused(lf_dir, tiny_hf_dir):
    problems = _problems(lf_dir, tiny_hf_dir, {"stage": "sft", **LORA, "dataset": "identity", "grpo_beta": 0.1,
                                               "reward_funcs": "rewards.py:brevity"})
    assert problems == ["grpo_beta, reward_funcs set but stage is sft; they only apply to stage: grpo"]
    (lf_dir / "bad.py").write_text("def f(:\n")
    problems = _problems(lf_dir, tiny_hf_dir, {**GRPO, **ONE_STEP, "reward_funcs": "bad.py:f", "reward_weights": None})
    assert problems[0].startswith("reward_funcs: 'bad.py:f': importing bad.py failed: SyntaxError")


def _run(dir: Path, model: Path, keys: dict) -> tuple[Path, list[dict], list[str]]:
    lines: list[str] = []
    out = train(_write(dir, model, keys), echo=lines.append)
    log = [json.loads(x) for x in (out / "trainer_log.jsonl").read_text().splitlines()]
    return out, log, lines


def test_grpo_one_step_on_the_tiny_model(lf_dir, tiny_hf_dir):
    out, log, lines = _run(lf_dir, tiny_hf_dir, {**GRPO, **ONE_STEP})
    step = next(r for r in log if "loss" in r)
    assert math.isfinite(step["loss"]) and "rewards/brevity/mean" in step and "rewards/recorder/mean" in step
    # brevity: -len/10 per completion; the logged mean and the weighted total agree with what the rewards saw
    seen = [json.loads(x) for x in (lf_dir / "seen.jsonl").read_text().splitlines()]
    assert len(seen) == 2 and seen[0]["prompt"] == seen[1]["prompt"]  # a batch of 2 completions: one group
    answers = {a["instruction"]: a["output"] for a in json.loads((lf_dir / "identity.json").read_text())}
    question = seen[0]["prompt"].split("user\n", 1)[1].split("<|im_end|>", 1)[0]
    assert seen[0]["answer"] == seen[1]["answer"] == answers[question]
    assert all(s["prompt"].startswith("<|im_start|>user\n") and s["prompt"].endswith("<|im_start|>assistant\n")
               for s in seen)
    brevity = sum(-len(s["completion"]) / 10.0 for s in seen) / 2
    assert step["rewards/brevity/mean"] == pytest.approx(brevity, abs=1e-4)
    assert step["reward"] == pytest.approx(step["rewards/brevity/mean"] + 2 * step["rewards/recorder/mean"], abs=1e-4)
    assert (out / "adapter_model.safetensors").is_file() and (out / "train_config.yaml").is_file()
    assert any(line.startswith("done: GRPO") for line in lines)


def test_grpo_full_finetuning_with_muon_one_step(lf_dir, tiny_hf_dir):
    keys = {**GRPO, **ONE_STEP, "finetuning_type": "full", "use_muon": True, "lora_rank": None, "lora_target": None}
    keys = {k: v for k, v in keys.items() if v is not None}
    out, log, _ = _run(lf_dir, tiny_hf_dir, keys)
    assert math.isfinite(next(r for r in log if "loss" in r)["loss"]) and (out / "model.safetensors").is_file()


def test_a_reward_function_with_the_wrong_count_is_named(lf_dir, tiny_hf_dir):
    from athanor.errors import AthanorError

    keys = {**GRPO, **ONE_STEP, "reward_funcs": "rewards.py:broken", "reward_weights": None}
    with pytest.raises(AthanorError, match="reward function broken returned list of 1 values for 2 completions"):
        train(_write(lf_dir, tiny_hf_dir, keys), echo=lambda _: None)


@pytest.mark.slow
def test_grpo_one_step_on_smollm2(lf_dir, smollm2_path):
    keys = {**GRPO, **ONE_STEP, "template": None, "lora_target": "q_proj,v_proj", "grpo_max_completion_length": 8}
    out, log, _ = _run(lf_dir, smollm2_path, keys)
    step = next(r for r in log if "loss" in r)
    assert math.isfinite(step["loss"]) and step["completions/mean_length"] > 0
    assert (out / "adapter_model.safetensors").is_file()
