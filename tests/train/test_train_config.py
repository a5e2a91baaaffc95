"""The training YAML: defaults, overrides, and every kind of problem listed together in one error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from athanor.errors import AthanorError
from athanor.train.config import ConfigError, TrainConfig, load_config

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


@pytest.fixture
def workdir(tmp_path, tiny_hf_dir) -> Path:
    (tmp_path / "sft.jsonl").write_text(json.dumps({"instruction": "2+2?", "output": "4"}) + "\n")
    (tmp_path / "pref.jsonl").write_text(json.dumps({"instruction": "2+2?", "chosen": "4", "rejected": "5"}) + "\n")
    (tmp_path / "dataset_info.json").write_text(json.dumps({"math": {"file_name": "sft.jsonl"}}))
    return tmp_path


def _write(dir: Path, **keys) -> Path:
    path = dir / "train.yaml"
    path.write_text(yaml.safe_dump(keys))
    return path


def test_minimal_config_defaults_and_overrides(workdir, tiny_hf_dir):
    path = _write(workdir, model_name_or_path=str(tiny_hf_dir), dataset="math, sft.jsonl", lora_rank=4)
    cfg = load_config(path, ["learning_rate=3e-4", "bf16=true", "lora_target=q_proj,v_proj"], has_cuda=False)
    assert cfg.dataset == ["math", "sft.jsonl"] and cfg.dataset_dir == str(workdir)
    assert cfg.effective_lora_alpha == 8.0  # default 2 x rank
    assert (cfg.learning_rate, cfg.bf16, cfg.lora_target) == (3e-4, True, ["q_proj", "v_proj"])
    assert cfg.stage == "sft" and cfg.finetuning_type == "lora" and cfg.lora_alpha is None


def test_all_problems_are_listed_together(workdir, tiny_hf_dir):
    path = _write(workdir, model_name_or_path=str(tiny_hf_dir), dataset="pref.jsonl", stage="sft",
                  learning_rat=1e-4,             # typo
                  lora_rank="eight",             # wrong type
                  quantization_bit=4,            # needs a GPU
                  fp16=True,                     # needs a GPU
                  finetuning_type="full",        # quantization needs lora
                  pref_beta=0.2)                 # only for dpo
    with pytest.raises(ConfigError) as info:
        load_config(path, ["per_device_train_batch_size=0"], has_cuda=False)
    problems = info.value.problems
    text = str(info.value)
    assert text.startswith(f"{len(problems)} problems in {path}:")
    expected = [
        "unknown key 'learning_rat'; did you mean 'learning_rate'?",
        "lora_rank: Input should be a valid integer",
        "per_device_train_batch_size: Input should be greater than or equal to 1",
        "quantization_bit: 4-bit QLoRA needs a CUDA GPU",
        "fp16: float16 mixed precision needs a CUDA GPU",
        "quantization_bit needs finetuning_type: lora",
        "pref_beta set but stage is sft",
        "dataset: pref.jsonl holds preference pairs",
    ]
    for want in expected:
        assert sum(want in p for p in problems) == 1, (want, problems)
    assert len(problems) == len(expected)
    assert all("\n" not in p for p in problems)


def test_dpo_needs_preference_data_and_gpu_combinations_pass_with_cuda(workdir, tiny_hf_dir, monkeypatch):
    path = _write(workdir, model_name_or_path=str(tiny_hf_dir), dataset="math", stage="dpo", packing=True,
                  val_size=0.1)
    with pytest.raises(ConfigError) as info:
        load_config(path, has_cuda=True)
    assert len(info.value.problems) == 2
    assert "math has no chosen/rejected pairs" in str(info.value) and "packing: true is not supported" in str(info.value)
    path = _write(workdir, model_name_or_path=str(tiny_hf_dir), dataset="pref.jsonl", stage="dpo",
                  quantization_bit=4, fp16=True, pref_loss="ipo", val_size=0.2)
    monkeypatch.setattr("athanor.train.qlora.has_bitsandbytes", lambda: True)
    assert load_config(path, has_cuda=True).pref_loss == "ipo"
    monkeypatch.setattr("athanor.train.qlora.has_bitsandbytes", lambda: False)
    with pytest.raises(ConfigError, match="QLoRA needs the bitsandbytes package: pip install bitsandbytes"):
        load_config(path, has_cuda=True)


def test_qlora_on_cpu_is_one_clear_line(workdir, tiny_hf_dir):
    path = _write(workdir, model_name_or_path=str(tiny_hf_dir), dataset="math", quantization_bit=8)
    with pytest.raises(ConfigError) as info:
        load_config(path, has_cuda=False)
    want = ("quantization_bit: 8-bit QLoRA needs a CUDA GPU (bitsandbytes); remove it to train LoRA in full "
            "precision on this machine")
    assert info.value.problems == [want]


def test_pt_stage_takes_text_files_and_text_columns(workdir, tiny_hf_dir):
    (workdir / "corpus.txt").write_text("one line\nanother\n")
    (workdir / "notes.jsonl").write_text('{"text": "a note"}\n')
    path = _write(workdir, model_name_or_path=str(tiny_hf_dir), stage="pt", dataset="corpus.txt,notes.jsonl")
    assert load_config(path, has_cuda=False).dataset == ["corpus.txt", "notes.jsonl"]
    (workdir / "dataset_info.json").write_text(json.dumps({"prefs": {"file_name": "pref.jsonl", "ranking": True}}))
    path = _write(workdir, model_name_or_path=str(tiny_hf_dir), stage="pt", dataset="missing.txt,prefs")
    with pytest.raises(ConfigError) as info:
        load_config(path, has_cuda=False)
    assert len(info.value.problems) == 2 and "preference pairs" in info.value.problems[1]


def test_missing_model_dataset_and_bad_override(workdir):
    path = _write(workdir, model_name_or_path="no-such-model", dataset="mathh")
    with pytest.raises(ConfigError) as info:
        load_config(path, ["oops"], has_cuda=False)
    text = str(info.value)
    assert "override 'oops': expected key=value" in text
    assert "'no-such-model' is not a file, a directory or a model in the store" in text
    assert "did you mean 'math'?" in text


def test_model_can_be_a_store_name(workdir):
    path = _write(workdir, model_name_or_path="smollm2", dataset="math")
    assert load_config(path, has_cuda=False).model_name_or_path == "smollm2"


def test_not_yaml_mapping_is_one_clear_error(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(AthanorError, match="expected a mapping"):
        load_config(path)


def test_every_field_is_documented():
    assert all(f.description for f in TrainConfig.model_fields.values())


TRAIN_RECIPES = sorted(p for p in RECIPES.rglob("*.yaml") if p.parent.name != "accelerate")


@pytest.mark.parametrize("path", TRAIN_RECIPES, ids=lambda p: str(p.relative_to(RECIPES)))
def test_every_shipped_recipe_parses_and_its_data_is_valid(path):
    from athanor.data.registry import load_datasets

    cfg = load_config(path, has_cuda=False)
    for names in (cfg.dataset, cfg.eval_dataset):
        if names:
            samples, reports = load_datasets(names, cfg.dataset_dir)  # raises on any invalid record
            assert samples and all(r.num_invalid == 0 for r in reports)


def test_recipes_exist():
    assert list(RECIPES.rglob("*.yaml")), "recipes/ should ship at least one YAML"


@pytest.mark.parametrize("path", sorted((RECIPES / "accelerate").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_accelerate_configs_load_in_accelerate(path):
    from accelerate.commands.config.config_args import ClusterConfig

    cfg = ClusterConfig.from_yaml_file(str(path))
    assert cfg.distributed_type in ("DEEPSPEED", "FSDP", "MULTI_GPU") and cfg.num_processes >= 1


def test_eval_dataset_is_checked_like_dataset(workdir, tiny_hf_dir):
    cfg = load_config(_write(workdir, model_name_or_path=str(tiny_hf_dir), dataset="math", eval_dataset="sft.jsonl"))
    assert cfg.eval_dataset == ["sft.jsonl"]
    path = _write(workdir, model_name_or_path=str(tiny_hf_dir), dataset="math", eval_dataset="nope.jsonl, pref.jsonl",
                  val_size=0.1)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    problems = info.value.problems
    assert any(p.startswith("val_size and eval_dataset are both set") for p in problems)
    assert any(p.startswith("dataset: ") and "nope.jsonl" in p for p in problems)
    assert any("pref.jsonl holds preference pairs" in p for p in problems)
    assert len(problems) == 3, problems
