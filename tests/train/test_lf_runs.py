"""LLaMA-Factory-style configs run end to end for one optimizer step: every stage on SmolLM2 (slow), every method
variant on the tiny random model (fast). A run counts when it trains, logs a finite loss and saves its output."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from athanor.train.run import train
from tests.train.test_lf_configs import COMMON, DATA, FULL, LORA, SFT, write_lf_data_dir

ONE_STEP = {"cutoff_len": 128, "max_samples": 2, "max_steps": 1, "logging_steps": 1, "gradient_accumulation_steps": 1, "bf16": False}


@pytest.fixture
def lf_dir(tmp_path) -> Path:
    return write_lf_data_dir(tmp_path)


def _run(dir: Path, model: Path, keys: dict, overrides: list[str] | None = None) -> tuple[Path, list[str]]:
    path = dir / "config.yaml"
    out = dir / "out"
    path.write_text(yaml.safe_dump({"model_name_or_path": str(model), **COMMON, **keys, **ONE_STEP,
                                    "output_dir": str(out)}, sort_keys=False))
    lines: list[str] = []
    train(path, overrides, echo=lines.append)
    log = [json.loads(x) for x in (out / "trainer_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert losses and all(math.isfinite(v) for v in losses), log
    return out, lines


VARIANTS = {
    "lora_llama3_template": {**SFT, "template": "llama3"},
    "dora_rslora_dropout": {**SFT, "use_dora": True, "use_rslora": True, "lora_dropout": 0.1},
    "loraplus": {**SFT, "loraplus_lr_ratio": 16.0},
    "pissa": {**SFT, "pissa_init": True, "pissa_iter": 4, "pissa_convert": True},
    "additional_target": {**SFT, "lora_target": "q_proj,v_proj", "additional_target": "lm_head"},
    "full_dft": {**FULL, "use_dft_loss": True},
    "full_pure_bf16": {**FULL, "pure_bf16": True},
    "freeze": {**DATA, "finetuning_type": "freeze", "freeze_trainable_layers": 1},
    "pretrain": {"stage": "pt", **LORA, "dataset": "c4_demo"},
    "dpo": {"stage": "dpo", **LORA, "dataset": "dpo_en_demo", "template": "qwen3_nothink", "pref_beta": 0.1},
    "oft": {**DATA, "finetuning_type": "oft", "oft_block_size": 8, "oft_target": "all", "module_dropout": 0.1},
    "reward_model": {"stage": "rm", **LORA, "dataset": "dpo_en_demo", "template": "qwen3_nothink"},
    "galore_layerwise": {**FULL, "use_galore": True, "galore_layerwise": True, "galore_rank": 4},
    "apollo": {**FULL, "use_apollo": True, "apollo_rank": 4, "apollo_proj": "svd"},
    "badam_ratio": {**FULL, "use_badam": True, "badam_mode": "ratio", "badam_update_ratio": 0.1},
    "adam_mini_rm": {**DATA, "stage": "rm", "finetuning_type": "full", "dataset": "dpo_en_demo", "use_adam_mini": True},
    "qwen3_thinking_default_system": {**SFT, "template": "qwen3", "enable_thinking": False,
                                      "default_system": "Be brief.", "warmup_steps": 1},
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_method_variants_run_one_step(lf_dir, tiny_hf_dir, name):
    out, lines = _run(lf_dir, tiny_hf_dir, VARIANTS[name])
    assert any(line.startswith("ignored ") and "ddp_timeout" in line for line in lines)
    peft = "lora_rank" in VARIANTS[name] or VARIANTS[name].get("finetuning_type") == "oft"
    saved = (out / "adapter_config.json") if peft else (out / "config.json")
    if name == "oft":
        assert json.loads(saved.read_text())["peft_type"] == "OFT"
    assert saved.is_file()
    if "use_dora" in VARIANTS[name]:
        cfg = json.loads(saved.read_text())
        assert cfg["use_dora"] and cfg["use_rslora"] and cfg["lora_dropout"] == 0.1
    if name == "pissa":  # converted to a plain LoRA of the original base: rank doubles, no PiSSA init left
        cfg = json.loads(saved.read_text())
        assert cfg["r"] == 16 and cfg["init_lora_weights"] is True and (out / "pissa_init").is_dir()
    if name == "reward_model":
        assert (out / "value_head.safetensors").is_file() and any(line.startswith("done: reward model") for line in lines)
        assert (out / "checkpoint-1" / "value_head.safetensors").is_file()
    if name == "additional_target":
        assert json.loads(saved.read_text())["modules_to_save"] == ["lm_head"]
    if name == "full_pure_bf16":  # trained and saved in bfloat16, as LF's pure_bf16
        from safetensors import safe_open

        with safe_open(str(out / "model.safetensors"), "pt") as f:
            assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}


def test_tokenized_path_saves_then_loads(lf_dir, tiny_hf_dir):
    keys = {**SFT, "tokenized_path": str(lf_dir / "tok")}
    _, first = _run(lf_dir, tiny_hf_dir, keys)
    assert any("tokenized rows saved to" in line for line in first)
    (lf_dir / "identity.json").unlink()  # LF: a saved tokenized_path is used instead of the dataset files
    _, second = _run(lf_dir, tiny_hf_dir, {**keys, "dataset": "alpaca_en_demo"})
    assert any(line.startswith("loaded ") and "(dataset keys not read)" in line for line in second), second


def test_continue_training_an_adapter_and_create_new_adapter(lf_dir, tiny_hf_dir):
    first, _ = _run(lf_dir, tiny_hf_dir, SFT)
    kept = lf_dir / "first"
    first.rename(kept)
    out, _ = _run(lf_dir, tiny_hf_dir, {**SFT, "adapter_name_or_path": str(kept)})
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 8
    out.rename(lf_dir / "second")
    out, _ = _run(lf_dir, tiny_hf_dir, {**SFT, "lora_rank": 4, "adapter_name_or_path": str(kept),
                                        "create_new_adapter": True})
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 4


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["sft", "pt", "dpo", "rm", "sft_oft"])
def test_stages_run_one_step_on_smollm2(lf_dir, smollm2_path, stage):
    keys = {"sft": {**SFT, "template": "llama3"}, "pt": {"stage": "pt", **LORA, "dataset": "c4_demo"},
            "dpo": {"stage": "dpo", **LORA, "dataset": "dpo_en_demo", "template": "qwen3_nothink"},
            "rm": {"stage": "rm", **LORA, "dataset": "dpo_en_demo", "template": "qwen3_nothink"},
            "sft_oft": {**DATA, "finetuning_type": "oft", "oft_block_size": 32, "oft_target": "q_proj,v_proj"}}[stage]
    if stage == "sft_oft":
        out, _ = _run(lf_dir, smollm2_path, keys)
        assert json.loads((out / "adapter_config.json").read_text())["peft_type"] == "OFT"
        return
    out, lines = _run(lf_dir, smollm2_path, keys, ["lora_target=q_proj,v_proj"])
    assert (out / "adapter_model.safetensors").is_file()
    assert any("overwrite_output_dir" in line for line in lines)


OPTIMIZERS = {
    # k/v only: GaLore starts with an SVD of each target's gradient, seconds apiece for SmolLM2 on a loaded CPU
    "galore": {"use_galore": True, "galore_layerwise": True, "galore_target": "k_proj,v_proj", "galore_rank": 16},
    "apollo": {"use_apollo": True, "apollo_target": "all", "apollo_rank": 16, "apollo_scale_type": "channel"},
    "badam": {"use_badam": True, "badam_mode": "layer", "badam_switch_mode": "descending", "badam_switch_interval": 1},
    "adam_mini": {"use_adam_mini": True},
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizers_run_one_full_step_on_smollm2(lf_dir, smollm2_path, name):
    """Full fine-tuning of SmolLM2 (tied embeddings, GQA) for one step with each optimizer LF offers; the saved
    weights differ from the base where the method trains (for BAdam, the last decoder layer only)."""
    from safetensors.torch import load_file

    from athanor.models.loader import load_checkpoint

    keys = {**FULL, "template": "llama3", **OPTIMIZERS[name], "learning_rate": 1e-3, "warmup_ratio": 0.0}
    out, _ = _run(lf_dir, smollm2_path, keys)
    trained = load_file(out / "model.safetensors")
    base = load_checkpoint(smollm2_path).tensors
    changed = {n for n, t in trained.items() if not torch.allclose(t.float(), base[n].float(), atol=1e-6)}
    if name == "badam":  # descending: the last block first
        assert changed and all(n.startswith("model.layers.29.") for n in changed), sorted(changed)[:5]
    else:
        assert "model.layers.0.self_attn.q_proj.weight" in changed and "model.layers.29.mlp.down_proj.weight" in changed


def test_reward_model_learns_to_rank_and_reports_accuracy(lf_dir, tiny_hf_dir):
    keys = {"stage": "rm", **LORA, "dataset": "dpo_en_demo", "eval_dataset": "dpo_en_demo", "learning_rate": 1e-2,
            "lr_scheduler_type": "constant", "warmup_ratio": 0.0}
    out, lines = _run(lf_dir, tiny_hf_dir, keys, ["max_steps=25", "max_samples=4"])
    [line] = [x for x in lines if x.startswith("held-out pairs:")]
    assert float(line.rsplit("accuracy ", 1)[1]) == 1.0, line  # every chosen reply scored above its rejected one
    log = [json.loads(x) for x in (out / "trainer_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert losses[-1] < losses[0], losses
