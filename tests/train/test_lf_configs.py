"""LLaMA-Factory-style configs, one per pattern of its examples/ folder (written here, not copied), with the model
swapped for a local one: each is either accepted (its no-op keys named on start-up lines) or refused with a
one-line reason. Also: the unknown-stage check comes first, "did you mean" points at the right key, hub datasets
and dataset_info.json resolution (tags, folders, globs, num_samples)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from athanor.data.registry import DatasetError, load_samples, resolve_dataset
from athanor.train.config import ConfigError, load_config

# What nearly every LLaMA-Factory training config carries besides its method.
COMMON = {
    "trust_remote_code": True, "do_train": True, "cutoff_len": 2048, "max_samples": 1000, "overwrite_cache": True,
    "preprocessing_num_workers": 16, "dataloader_num_workers": 4, "output_dir": "saves/run", "logging_steps": 10,
    "save_steps": 500, "plot_loss": True, "overwrite_output_dir": True, "save_only_model": False, "report_to": "none",
    "per_device_train_batch_size": 1, "gradient_accumulation_steps": 8, "learning_rate": 1.0e-4,
    "num_train_epochs": 3.0, "lr_scheduler_type": "cosine", "warmup_ratio": 0.1, "bf16": True,
    "ddp_timeout": 180000000, "resume_from_checkpoint": None,
}
LORA = {"finetuning_type": "lora", "lora_rank": 8, "lora_target": "all"}
DATA = {"stage": "sft", "dataset": "identity,alpaca_en_demo", "template": "qwen3_nothink"}
SFT = {**DATA, **LORA}
FULL = {**DATA, "finetuning_type": "full"}

# pattern -> extra keys over COMMON; these run on a CPU machine.
RUNS = {
    "extras/galore_pure_bf16": {**FULL, "use_galore": True, "pure_bf16": True},  # LF's GaLore/APOLLO examples
    "train_lora/lora_sft": SFT,
    "train_lora/lora_sft_ds3": {**SFT, "deepspeed": "examples/deepspeed/ds_z3_config.json"},
    "train_lora/lora_sft_ray": {**SFT, "ray_num_workers": 4, "ray_init_kwargs": {"runtime_env": {}}},
    "train_lora/lora_pretrain": {"stage": "pt", **LORA, "dataset": "c4_demo", "template": "qwen3_nothink"},
    "train_lora/lora_dpo": {"stage": "dpo", **LORA, "dataset": "dpo_en_demo", "template": "qwen3_nothink",
                            "pref_beta": 0.1, "pref_loss": "sigmoid"},
    "train_full/full_sft": {**FULL, "deepspeed": "examples/deepspeed/ds_z3_config.json"},
    "train_freeze/freeze_sft": {**DATA, "finetuning_type": "freeze", "freeze_trainable_layers": 1,
                                "freeze_trainable_modules": "all"},
    "extras/loraplus": {**SFT, "template": "llama3", "loraplus_lr_ratio": 16.0},
    "extras/pissa": {**SFT, "template": "llama3", "pissa_init": True, "pissa_iter": 16},
    "extras/dora_rslora": {**SFT, "use_dora": True, "use_rslora": True, "lora_dropout": 0.05},
    "train_lora/lora_reward": {"stage": "rm", **LORA, "dataset": "dpo_en_demo", "template": "qwen3_nothink"},
    "extras/oft": {**DATA, "finetuning_type": "oft", "oft_block_size": 32, "oft_target": "all"},
    "extras/dft": {**FULL, "use_dft_loss": True},
    "train_lora/preprocess": {**SFT, "tokenized_path": "saves/tokenized"},
    "train_qlora/gptq_model": {**SFT, "template": "llama3"},  # a pre-quantized hub model, swapped for ours
    # LF's extras/galore, apollo, badam and adam_mini (its galore/apollo examples also set pure_bf16: galore_pure_bf16)
    "extras/galore": {**FULL, "use_galore": True, "galore_layerwise": True, "galore_target": "all", "galore_rank": 128,
                      "galore_scale": 2.0, "gradient_accumulation_steps": 1},
    "extras/apollo": {**FULL, "use_apollo": True, "apollo_layerwise": True, "apollo_target": "all",
                      "apollo_rank": 128, "apollo_scale": 32.0, "apollo_scale_type": "channel",
                      "gradient_accumulation_steps": 1},
    "extras/badam": {**FULL, "use_badam": True, "badam_mode": "layer", "badam_switch_mode": "ascending",
                     "badam_switch_interval": 50, "badam_verbose": 2},
    "extras/adam_mini": {**FULL, "use_adam_mini": True},
    "extras/muon": {**FULL, "template": "qwen", "use_muon": True, "learning_rate": 1.0e-5},
    "extras/llama_pro": {**DATA, "template": "llama3", "finetuning_type": "freeze", "freeze_trainable_layers": 8,
                         "freeze_trainable_modules": "all", "use_llama_pro": True},
    "extras/asft": {**FULL, "template": "llama2", "deepspeed": "examples/deepspeed/ds_z0_config.json",
                    "use_asft_loss": True, "asft_alpha": 0.1},
    "extras/eaft": {**FULL, "template": "qwen", "use_eaft_loss": True},
    "train_lora/lora_kto": {"stage": "kto", **LORA, "dataset": "kto_en_demo", "template": "qwen3_nothink",
                            "pref_beta": 0.1, "learning_rate": 5.0e-6},
    "extras/nlg_eval_predict": {"stage": "sft", **LORA, "do_train": False, "do_predict": True,
                                "eval_dataset": "identity,alpaca_en_demo", "template": "llama3",
                                "predict_with_generate": True, "per_device_eval_batch_size": 1},
    "train_lora/qwen3_thinking": {**SFT, "template": "qwen3", "enable_thinking": True, "warmup_steps": 10,
                                  "adam_beta1": 0.9, "adam_beta2": 0.999, "max_grad_norm": 1.0},
}

# pattern -> (extra keys, the refusal's words)
REFUSED = {
    "ppo": ({"stage": "ppo", **LORA, "dataset": "identity", "reward_model": "saves/rm"}, "stage: ppo needs a reward"),
    "train_qlora/otfq_bnb": ({**SFT, "quantization_bit": 4, "quantization_method": "bnb"},
                             "quantization_bit: 4-bit QLoRA needs a CUDA GPU"),
    "extras/galore_lora": ({**SFT, "use_galore": True}, "use_galore: cannot be used with finetuning_type: lora"),
    "extras/galore_layerwise_accumulation": ({**FULL, "use_galore": True, "galore_layerwise": True},
                                             "galore_layerwise: steps each parameter during backward"),
    "extras/mod": ({**FULL, "mixture_of_depths": "convert"},
                   "mixture_of_depths: LLaMA-Factory runs it on the MoD package (pip: mixture-of-depth)"),
    "extras/llama_pro_full": ({**FULL, "use_llama_pro": True}, "use_llama_pro: trains the expanded blocks with "
                              "finetuning_type freeze or lora (got full)"),
    "extras/nlg_eval_predict_without_generate": ({"stage": "sft", **LORA, "do_predict": True,
                                                  "eval_dataset": "identity"},
                                                 "do_predict needs predict_with_generate: true"),
    "extras/fp8": ({**FULL, "fp8": True, "fp8_backend": "torchao"}, "fp8: FP8 training"),
    "extras/fsdp_qlora": ({**SFT, "quantization_bit": 4}, "quantization_bit: 4-bit QLoRA needs a CUDA GPU"),
    "oft_rank_and_block": ({**DATA, "finetuning_type": "oft", "oft_rank": 4, "oft_block_size": 32},
                           "oft_rank and oft_block_size: exactly one must be non-zero"),
    "ktransformers": ({**SFT, "use_kt": True, "kt_cpu_activation": "retain"}, "use_kt: ktransformers needs CUDA"),
    "unsloth": ({**SFT, "use_unsloth": True}, "use_unsloth: unsloth needs CUDA kernels"),
    "flash_attn": ({**SFT, "flash_attn": "fa2"}, "flash_attn: FlashAttention needs CUDA kernels"),
    "paged_adamw_8bit": ({**SFT, "optim": "paged_adamw_8bit"},
                         "optim: paged_adamw_8bit needs bitsandbytes and a CUDA GPU"),
}


@pytest.fixture
def lf_dir(tmp_path) -> Path:
    return write_lf_data_dir(tmp_path)


def write_lf_data_dir(tmp_path: Path) -> Path:
    """A data/ folder shaped like LLaMA-Factory's: dataset_info.json and demo files in its formats."""
    alpaca = [{"instruction": f"What is {i} plus {i}?", "input": "", "output": f"It is {2 * i}."} for i in range(6)]
    (tmp_path / "identity.json").write_text(json.dumps(alpaca[:3]))
    (tmp_path / "alpaca_en_demo.json").write_text(json.dumps(alpaca[3:]))
    pairs = [{"conversations": [{"from": "human", "value": f"Say {i}."}],
              "chosen": {"from": "gpt", "value": f"{i}."}, "rejected": {"from": "gpt", "value": "No."}}
             for i in range(4)]
    (tmp_path / "dpo_en_demo.json").write_text(json.dumps(pairs))
    kto = [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}],
            "label": True}]
    (tmp_path / "kto_en_demo.json").write_text(json.dumps(kto))
    (tmp_path / "c4_demo.jsonl").write_text("\n".join(json.dumps({"text": f"Plain text number {i}."})
                                                      for i in range(4)))
    info = {
        "identity": {"file_name": "identity.json"},
        "alpaca_en_demo": {"file_name": "alpaca_en_demo.json"},
        "dpo_en_demo": {"file_name": "dpo_en_demo.json", "ranking": True, "formatting": "sharegpt",
                        "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"}},
        "kto_en_demo": {"file_name": "kto_en_demo.json", "formatting": "sharegpt",
                        "columns": {"messages": "messages", "kto_tag": "label"},
                        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                                 "assistant_tag": "assistant"}},
        "c4_demo": {"file_name": "c4_demo.jsonl", "columns": {"prompt": "text"}},
        "alpaca_en": {"hf_hub_url": "llamafactory/alpaca_en", "ms_hub_url": "llamafactory/alpaca_en"},
    }
    (tmp_path / "dataset_info.json").write_text(json.dumps(info))
    return tmp_path


def _write(dir: Path, model: Path, keys: dict) -> Path:
    path = dir / "config.yaml"
    path.write_text(yaml.safe_dump({"model_name_or_path": str(model), **COMMON, **keys}, sort_keys=False))
    return path


@pytest.mark.parametrize("pattern", sorted(RUNS))
def test_supported_patterns_are_accepted_with_their_no_ops_named(lf_dir, tiny_hf_dir, pattern):
    cfg = load_config(_write(lf_dir, tiny_hf_dir, RUNS[pattern]), has_cuda=False)
    noted = " ".join(cfg.notes)
    for key in ("trust_remote_code", "overwrite_cache", "preprocessing_num_workers", "ddp_timeout", "plot_loss"):
        assert key in noted, (key, cfg.notes)
    assert all(line.startswith("ignored ") and "\n" not in line for line in cfg.notes)
    if "deepspeed" in RUNS[pattern]:
        assert "DeepSpeed needs CUDA/torch.distributed, so this run trains without it" in noted


@pytest.mark.parametrize("pattern", sorted(REFUSED))
def test_unsupported_patterns_are_refused_in_one_line(lf_dir, tiny_hf_dir, pattern):
    keys, words = REFUSED[pattern]
    with pytest.raises(ConfigError) as info:
        load_config(_write(lf_dir, tiny_hf_dir, keys), has_cuda=False)
    assert any(p.startswith(words) for p in info.value.problems), info.value.problems
    assert all("\n" not in p for p in info.value.problems)


def test_unknown_stage_is_reported_alone_before_other_checks(lf_dir, tiny_hf_dir):
    path = _write(lf_dir, tiny_hf_dir, {"stage": "orpo", "pref_beta": 0.1, "dataset": "nope", "learning_rat": 1})
    with pytest.raises(ConfigError) as info:
        load_config(path, has_cuda=False)
    assert info.value.problems == ["stage: unknown stage 'orpo'; LLaMA-Factory's stages are pt, sft, rm, ppo, dpo, "
                                   "kto (athanor adds grpo)"]


@pytest.mark.parametrize(("typo", "meant"), [("plot_los", "plot_loss"), ("deepspeeed", "deepspeed"),
                                             ("adapter_name_or_pth", "adapter_name_or_path"),
                                             ("learning_rat", "learning_rate"), ("lora_rnk", "lora_rank")])
def test_did_you_mean_points_at_the_right_key(lf_dir, tiny_hf_dir, typo, meant):
    with pytest.raises(ConfigError) as info:
        load_config(_write(lf_dir, tiny_hf_dir, {**SFT, typo: 1}), has_cuda=False)
    assert f"unknown key {typo!r}; did you mean {meant!r}?" in info.value.problems


def test_command_line_overrides_and_known_keys_that_were_wrongly_unknown(lf_dir, tiny_hf_dir):
    path = _write(lf_dir, tiny_hf_dir, {**SFT, "plot_loss": True, "deepspeed": "ds.json"})
    cfg = load_config(path, ["learning_rate=3e-4", "max_steps=1", "template=llama3", "use_dora=true"], has_cuda=False)
    assert (cfg.learning_rate, cfg.max_steps, cfg.template, cfg.use_dora) == (3e-4, 1, "llama3", True)


def test_hub_datasets_say_so(lf_dir, tiny_hf_dir):
    with pytest.raises(ConfigError) as info:
        load_config(_write(lf_dir, tiny_hf_dir, {**SFT, "dataset": "alpaca_en"}), has_cuda=False)
    want = ("dataset: alpaca_en: this dataset is on the hub (llamafactory/alpaca_en); download it to a file and "
            "name that file in file_name instead of the hub URL")
    assert info.value.problems == [want]
    with pytest.raises(ConfigError, match="dataset_dir: REMOTE:llamafactory/demo_data is on the hub"):
        load_config(_write(lf_dir, tiny_hf_dir, {**SFT, "dataset_dir": "REMOTE:llamafactory/demo_data"}))


def test_refused_keys_at_their_off_value_are_accepted(lf_dir, tiny_hf_dir):
    keys = {**SFT, "use_unsloth": False, "flash_attn": "auto", "use_galore": False, "mix_strategy": "concat",
            "quantization_method": "bnb", "enable_liger_kernel": False}
    assert load_config(_write(lf_dir, tiny_hf_dir, keys), has_cuda=False).template == "qwen3_nothink"


def test_dataset_info_tags_folders_globs_and_num_samples(lf_dir):
    spec = resolve_dataset("kto_en_demo", lf_dir)
    samples, report = load_samples(spec)
    assert report.num_valid == 1 and samples[0].messages[1] == {"role": "assistant", "content": "Hello."}
    (lf_dir / "parts").mkdir()
    for i in range(3):
        (lf_dir / "parts" / f"{i}.json").write_text(json.dumps([{"instruction": f"q{i}", "output": f"a{i}"}]))
    info = json.loads((lf_dir / "dataset_info.json").read_text())
    info |= {"folder": {"file_name": "parts"}, "glob": {"file_name": "parts/[01].json"},
             "more": {"file_name": "identity.json", "num_samples": 7},
             "fewer": {"file_name": "identity.json", "num_samples": 2}}
    (lf_dir / "dataset_info.json").write_text(json.dumps(info))
    assert load_samples(resolve_dataset("folder", lf_dir))[1].num_valid == 3
    assert load_samples(resolve_dataset("glob", lf_dir))[1].num_valid == 2
    more = load_samples(resolve_dataset("more", lf_dir))[0]
    assert len(more) == 7 and len({m.messages[0]["content"] for m in more}) == 3  # all 3, then repeats
    fewer = load_samples(resolve_dataset("fewer", lf_dir))[0]
    assert len(fewer) == 2 and len({m.messages[0]["content"] for m in fewer}) == 2  # a permutation, no repeats
    (lf_dir / "dataset_info.json").write_text(json.dumps({
        "x": {"file_name": "missing.json"},
        "mllm": {"file_name": "identity.json", "formatting": "sharegpt", "columns": {"messages": "messages",
                                                                                    "images": "images"}}}))
    with pytest.raises(DatasetError, match="^mllm: has images columns; athanor trains text models"):
        resolve_dataset("mllm", lf_dir)
    with pytest.raises(DatasetError, match="file .*missing.json not found"):
        resolve_dataset("x", lf_dir)


def test_dataset_dir_defaults_as_llamafactory_cli_does_from_its_checkout(tmp_path, tiny_hf_dir, monkeypatch):
    """LF's layout: `llamafactory-cli train examples/train_lora/x.yaml` run from the checkout's root finds its
    datasets in ./data (dataset_dir's default, relative to the working directory). The YAML's own folder still
    wins when it holds a registry."""
    (tmp_path / "data").mkdir()
    write_lf_data_dir(tmp_path / "data")
    cfg_dir = tmp_path / "examples" / "train_lora"
    cfg_dir.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    cfg = load_config(_write(cfg_dir, tiny_hf_dir, SFT), has_cuda=False)
    assert Path(cfg.dataset_dir).resolve() == (tmp_path / "data").resolve()
    cfg = load_config(_write(cfg_dir, tiny_hf_dir, {**SFT, "dataset_dir": "data"}), has_cuda=False)
    assert Path(cfg.dataset_dir).resolve() == (tmp_path / "data").resolve()
    write_lf_data_dir(cfg_dir)  # a registry next to the YAML: ours wins
    cfg = load_config(_write(cfg_dir, tiny_hf_dir, SFT), has_cuda=False)
    assert Path(cfg.dataset_dir).resolve() == cfg_dir.resolve()
