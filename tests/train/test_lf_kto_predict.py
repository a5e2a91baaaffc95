"""LLaMA-Factory's `stage: kto` (on trl's KTOTrainer) and `do_predict` (generated_predictions.jsonl and the BLEU-4 /
ROUGE numbers of LF's ComputeSimilarity): data layout, config checks with LF's reasons, hand-checked scores, and
1-step runs on the tiny model (SmolLM2 in the slow test)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from athanor.train.config import ConfigError, load_config
from athanor.train.predict_metrics import mean_scores, similarity_scores
from athanor.train.run import train
from tests.train.test_lf_configs import COMMON, LORA, SFT, _write, write_lf_data_dir

ONE_STEP = {"cutoff_len": 128, "max_samples": 4, "max_steps": 1, "logging_steps": 1, "gradient_accumulation_steps": 1,
            "bf16": False}
KTO = {"stage": "kto", **LORA, "dataset": "kto_mix", "template": "qwen3_nothink", "pref_beta": 0.1}


@pytest.fixture
def lf_dir(tmp_path) -> Path:
    """LF's demo layout plus a kto dataset with both tags (LF's kto_en_demo: OpenAI-style turns, a `label` tag)."""
    write_lf_data_dir(tmp_path)
    rows = [{"messages": [{"role": "user", "content": f"Add {i} and {i}."},
                          {"role": "assistant", "content": f"{2 * i}." if i % 2 == 0 else "Maybe five."}],
             "label": i % 2 == 0} for i in range(4)]
    (tmp_path / "kto_mix.json").write_text(json.dumps(rows))
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    info["kto_mix"] = {**info["kto_en_demo"], "file_name": "kto_mix.json"}
    (tmp_path / "dataset_info.json").write_text(json.dumps(info))
    return tmp_path




def _run(dir: Path, model: Path, keys: dict) -> tuple[Path, list[str], list[dict]]:
    out = dir / "out"
    lines: list[str] = []
    over = keys.get("_over", {})  # beats ONE_STEP
    keys = {k: v for k, v in keys.items() if k != "_over"}
    train(_write(dir, model, {**keys, **ONE_STEP, "output_dir": str(out), **over}), echo=lines.append)
    log_file = out / "trainer_log.jsonl"
    log = [json.loads(x) for x in log_file.read_text().splitlines()] if log_file.is_file() else []
    return out, lines, log


# ------------------------------------------------------------------------------------------------ KTO


def test_kto_config_honours_beta_and_weights(lf_dir, tiny_hf_dir):
    cfg = load_config(_write(lf_dir, tiny_hf_dir, {**KTO, "pref_beta": 0.2, "kto_chosen_weight": 1.0,
                                                   "kto_rejected_weight": 1.33}), has_cuda=False)
    assert (cfg.stage, cfg.pref_beta, cfg.kto_chosen_weight, cfg.kto_rejected_weight) == ("kto", 0.2, 1.0, 1.33)
    assert not any("kto_" in line for line in cfg.notes)


@pytest.mark.parametrize("keys, words", [
    ({**SFT, "kto_rejected_weight": 1.5}, "kto_rejected_weight set but stage is sft; they only apply to stage: kto"),
    ({**KTO, "pref_loss": "sigmoid"}, "pref_loss set but stage is kto; it only applies to stage: dpo"),
    ({**KTO, "dataset": "identity"}, "dataset: identity has neither a kto_tag column nor chosen/rejected pairs"),
    ({**KTO, "packing": True}, "packing: true is not supported with stage: kto"),
])
def test_kto_refusals(lf_dir, tiny_hf_dir, keys, words):
    with pytest.raises(ConfigError) as info:
        load_config(_write(lf_dir, tiny_hf_dir, keys), has_cuda=False)
    assert any(p.startswith(words) for p in info.value.problems), info.value.problems


def test_kto_rows_split_prompt_and_reply_and_rotate_kl_completions(lf_dir, tiny_hf_dir):
    from athanor.text.tokenizer import Tokenizer
    from athanor.train.kto import feedback_rows

    cfg = load_config(_write(lf_dir, tiny_hf_dir, {**KTO, "template": None, "dataset": "kto_mix,dpo_en_demo",
                                                   "max_samples": 2}), has_cuda=False)
    tok = Tokenizer.from_hf_dir(tiny_hf_dir)
    rows = feedback_rows(cfg, tok, cfg.dataset, lambda _: None)
    text = [(tok.backend.decode(r["prompt_ids"], skip_special_tokens=False),
             tok.backend.decode(r["completion_ids"], skip_special_tokens=False), r["label"]) for r in rows]
    assert text == [
        ("<|im_start|>user\nAdd 0 and 0.<|im_end|>\n<|im_start|>assistant\n", "0.<|im_end|>", True),
        ("<|im_start|>user\nAdd 1 and 1.<|im_end|>\n<|im_start|>assistant\n", "Maybe five.<|im_end|>", False),
        # a ranking dataset is unpaired: its chosen reply desirable, its rejected reply not
        ("<|im_start|>user\nSay 0.<|im_end|>\n<|im_start|>assistant\n", "0.<|im_end|>", True),
        ("<|im_start|>user\nSay 0.<|im_end|>\n<|im_start|>assistant\n", "No.<|im_end|>", False),
        ("<|im_start|>user\nSay 1.<|im_end|>\n<|im_start|>assistant\n", "1.<|im_end|>", True),
        ("<|im_start|>user\nSay 1.<|im_end|>\n<|im_start|>assistant\n", "No.<|im_end|>", False),
    ]
    # LF's KL samples: each prompt with the previous sample's reply (the last sample's for the first)
    assert [r["KL_completion_ids"] for r in rows] == [rows[-1]["completion_ids"]] + [r["completion_ids"]
                                                                                     for r in rows[:-1]]


def test_prompt_and_reply_share_cutoff_len_as_lf_does():
    from athanor.train.prompt_reply import infer_seqlen

    assert infer_seqlen(10, 3, 8) == (5, 3)  # a short reply stays whole; the prompt keeps its first 5
    assert infer_seqlen(3, 10, 8) == (3, 5)  # a short prompt stays whole; the reply keeps its first 5
    assert infer_seqlen(10, 10, 8) == (4, 4)  # both long: in proportion
    assert infer_seqlen(2, 3, 8) == (2, 3)


def test_kto_tag_must_be_a_boolean(lf_dir, tiny_hf_dir):
    from athanor.data.registry import DatasetError
    from athanor.train.kto import load_feedback

    rows = json.loads((lf_dir / "kto_mix.json").read_text())
    rows[1]["label"] = "yes"
    (lf_dir / "kto_mix.json").write_text(json.dumps(rows))
    with pytest.raises(DatasetError, match=r"kto_mix: record #1: kto_tag column 'label' must be true or false"):
        load_feedback(["kto_mix"], str(lf_dir), None)


@pytest.mark.parametrize("finetuning_type", ["lora", "full"])
def test_kto_first_step_loss_is_the_weighted_half(lf_dir, tiny_hf_dir, finetuning_type):
    """At step 1 the policy is its reference (LoRA B is zero; full tuning starts from the copy), so every log-ratio
    and the KL estimate are 0 and KTO's loss is weight x (1 - sigmoid(0)) = weight / 2 for the one sample of the
    batch: 0.5 x kto_chosen_weight for a desirable reply, 0.5 x kto_rejected_weight for an undesirable one."""
    keys = {**KTO, "kto_chosen_weight": 0.8, "kto_rejected_weight": 1.5}
    if finetuning_type == "full":
        keys = {k: v for k, v in keys.items() if not k.startswith("lora_")} | {"finetuning_type": "full"}
    out, lines, log = _run(lf_dir, tiny_hf_dir, keys)
    [step] = [r for r in log if "loss" in r]
    desirable = "rewards/chosen" in step
    assert desirable != ("rewards/rejected" in step), step
    assert step["loss"] == pytest.approx(0.4 if desirable else 0.75, abs=1e-5), step
    assert step["kl"] == 0.0
    assert any(line.startswith("4 feedback samples (2 desirable, 2 undesirable)") for line in lines), lines
    saved = out / ("adapter_model.safetensors" if finetuning_type == "lora" else "model.safetensors")
    assert saved.is_file() and not (out / "ref").exists()


def test_kto_learns_to_prefer_desirable_replies(lf_dir, tiny_hf_dir):
    keys = {**KTO, "learning_rate": 5e-3, "lr_scheduler_type": "constant", "warmup_ratio": 0.0,
            "per_device_train_batch_size": 2, "_over": {"max_steps": 12}}
    _, _, log = _run(lf_dir, tiny_hf_dir, keys)
    steps = [r for r in log if "loss" in r]
    assert len(steps) == 12 and all(math.isfinite(r["loss"]) for r in steps)
    late = steps[-4:]
    chosen = [r["rewards/chosen"] for r in late if "rewards/chosen" in r]
    rejected = [r["rewards/rejected"] for r in late if "rewards/rejected" in r]
    assert chosen and rejected and min(chosen) > max(rejected), late


def test_kto_evaluates_held_out_feedback(lf_dir, tiny_hf_dir):
    keys = {**KTO, "val_size": 2, "eval_steps": 1, "per_device_train_batch_size": 2, "_over": {"max_steps": 2}}
    _, lines, log = _run(lf_dir, tiny_hf_dir, keys)
    assert any(line.startswith("2 feedback samples") and line.endswith(", 2 held out") for line in lines), lines
    evals = [r for r in log if "eval_loss" in r]
    assert [r["step"] for r in evals] == [1, 2] and all(math.isfinite(r["eval_loss"]) for r in evals), log


# ------------------------------------------------------------------------------------------------ predict


def test_scores_match_hand_computed_values():
    # BLEU-4 on characters: 'the cat' has every 1..4-gram in the reference; brevity penalty exp(1 - 11/7)
    assert similarity_scores("the cat", "the cat sat") == {
        "bleu-4": round(math.exp(1 - 11 / 7) * 100, 4), "rouge-1": 80.0, "rouge-2": 66.6667, "rouge-l": 80.0}
    # jieba words [今天天气, 很, 好] vs [今天天气, 不错]: one shared unigram -> F1 of P=1/3, R=1/2 = 0.4; no bigram.
    # Characters: 4/6, 3/5, 2/4, 1/3 n-gram precisions, same length -> BLEU = (4/6 * 3/5 * 2/4 * 1/3) ** 0.25
    assert similarity_scores("今天天气很好", "今天天气不错") == {
        "bleu-4": round((4 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25 * 100, 4), "rouge-1": 40.0, "rouge-2": 0.0,
        "rouge-l": 40.0}
    assert similarity_scores("same words", "same words") == {k: 100.0 for k in ("bleu-4", "rouge-1", "rouge-2",
                                                                                 "rouge-l")}
    assert similarity_scores("", "abc") == {"bleu-4": 0.0, "rouge-1": 0.0, "rouge-2": 0.0, "rouge-l": 0.0}
    both = mean_scores([("same words", "same words"), ("", "abc")])
    assert both == {"bleu-4": 50.0, "rouge-1": 50.0, "rouge-2": 50.0, "rouge-l": 50.0}


@pytest.mark.parametrize("keys, words", [
    ({**SFT, "do_predict": True, "eval_dataset": "identity"},
     "do_predict needs predict_with_generate: true; LLaMA-Factory: \"Please enable `predict_with_generate`"),
    ({**SFT, "do_predict": True, "predict_with_generate": True},
     "predict_with_generate needs eval_dataset; LLaMA-Factory: \"Cannot use `predict_with_generate` if"),
    ({"stage": "dpo", **LORA, "dataset": "dpo_en_demo", "predict_with_generate": True, "eval_dataset": "dpo_en_demo"},
     "predict_with_generate: stage: sft only (got dpo)"),
    ({**SFT, "do_train": False}, "do_train: false needs do_predict: true"),
    ({**SFT, "do_eval": True}, "do_eval: no eval data (set eval_dataset or val_size); LLaMA-Factory: \"Please specify"),
])
def test_predict_refusals(lf_dir, tiny_hf_dir, keys, words):
    with pytest.raises(ConfigError) as info:
        load_config(_write(lf_dir, tiny_hf_dir, keys), has_cuda=False)
    assert any(p.startswith(words) for p in info.value.problems), info.value.problems


def test_generation_keys_take_lf_defaults_and_max_new_tokens_wins(lf_dir, tiny_hf_dir):
    from athanor.text.tokenizer import Tokenizer
    from athanor.train.predict import generation_kwargs

    keys = {**SFT, "do_predict": True, "predict_with_generate": True, "eval_dataset": "identity"}
    cfg = load_config(_write(lf_dir, tiny_hf_dir, keys), has_cuda=False)
    tok = Tokenizer.from_hf_dir(tiny_hf_dir)
    got = generation_kwargs(cfg, tok)
    assert {k: got[k] for k in ("do_sample", "temperature", "top_p", "top_k", "num_beams", "max_new_tokens")} == {
        "do_sample": True, "temperature": 0.95, "top_p": 0.7, "top_k": 50, "num_beams": 1, "max_new_tokens": 1024}
    cfg = load_config(_write(lf_dir, tiny_hf_dir, {**keys, "max_new_tokens": 0, "max_length": 77, "do_sample": False}),
                      has_cuda=False)
    got = generation_kwargs(cfg, tok)
    assert got["max_length"] == 77 and "max_new_tokens" not in got and got["do_sample"] is False
    assert "temperature" not in got and tok.eos_token_id in got["eos_token_id"]


def test_a_predict_config_without_do_train_only_predicts(lf_dir, tiny_hf_dir):
    keys = {"stage": "sft", **LORA, "do_predict": True, "predict_with_generate": True, "eval_dataset": "identity"}
    raw = {"model_name_or_path": str(tiny_hf_dir), **{k: v for k, v in COMMON.items() if k != "do_train"}, **keys}
    (lf_dir / "predict.yaml").write_text(yaml.safe_dump(raw))
    assert load_config(lf_dir / "predict.yaml", has_cuda=False).do_train is False  # LF/HF's default


def _check_prediction_files(out: Path, labels: list[str]) -> list[dict]:
    rows = [json.loads(x) for x in (out / "generated_predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [sorted(r) for r in rows] == [["label", "predict", "prompt"]] * len(labels)
    assert [r["label"] for r in rows] == labels
    assert all(r["prompt"].endswith("<|im_start|>assistant\n") for r in rows)  # special tokens kept in the prompt
    results = json.loads((out / "predict_results.json").read_text())
    scores = mean_scores([(r["predict"], r["label"]) for r in rows])
    for key, value in scores.items():
        assert results[f"predict_{key}"] == pytest.approx(value), (key, results)
    assert results["predict_runtime"] > 0
    return rows


def test_train_then_predict_writes_lf_files(lf_dir, tiny_hf_dir):
    keys = {**SFT, "eval_dataset": "identity", "do_eval": True, "do_predict": True, "predict_with_generate": True,
            "max_new_tokens": 6, "template": None}
    out, lines, log = _run(lf_dir, tiny_hf_dir, keys)
    assert any("loss" in r for r in log)
    assert math.isfinite(json.loads((out / "eval_results.json").read_text())["eval_loss"])  # do_eval, as LF writes it
    rows = _check_prediction_files(out, ["It is 0.", "It is 2.", "It is 4."])
    assert rows[0]["prompt"] == "<|im_start|>user\nWhat is 0 plus 0?<|im_end|>\n<|im_start|>assistant\n"
    assert any(line.startswith("predict: 3 samples; bleu-4 ") for line in lines)


def test_predict_only_is_deterministic_when_greedy(lf_dir, tiny_hf_dir):
    keys = {**SFT, "do_train": False, "dataset": [], "eval_dataset": "identity", "do_predict": True,
            "predict_with_generate": True, "do_sample": False, "max_new_tokens": 5, "template": None}
    out, _, log = _run(lf_dir, tiny_hf_dir, keys)
    assert log == []  # nothing trained
    first = _check_prediction_files(out, ["It is 0.", "It is 2.", "It is 4."])
    out.rename(lf_dir / "first")
    again = _check_prediction_files(_run(lf_dir, tiny_hf_dir, keys)[0], ["It is 0.", "It is 2.", "It is 4."])
    assert first == again


# ------------------------------------------------------------------------------------------------ SmolLM2


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["kto", "sft_predict"])
def test_kto_and_predict_run_one_step_on_smollm2(lf_dir, smollm2_path, stage):
    if stage == "kto":
        keys = {**KTO, "lora_target": "q_proj,v_proj"}
    else:
        keys = {**SFT, "lora_target": "q_proj,v_proj", "eval_dataset": "identity", "do_predict": True,
                "predict_with_generate": True, "max_new_tokens": 8, "template": None, "_over": {"max_samples": 2}}
    out, _, log = _run(lf_dir, smollm2_path, keys)
    losses = [r["loss"] for r in log if "loss" in r]
    assert losses and all(math.isfinite(v) for v in losses)
    assert (out / "adapter_model.safetensors").is_file()
    if stage == "sft_predict":
        _check_prediction_files(out, ["It is 0.", "It is 2."])


def test_check_prints_the_plan_for_kto_and_predict_only(lf_dir, tiny_hf_dir):
    from athanor.train.check import check_run

    plan = check_run(_write(lf_dir, tiny_hf_dir, {**KTO, "dataset": "kto_mix,dpo_en_demo"}), echo=lambda _: None)
    assert (plan.stage, plan.num_samples, plan.rows) == ("kto", 12, 12)  # 4 tagged + 4 pairs unpaired
    plan = check_run(_write(lf_dir, tiny_hf_dir, {**SFT, "do_train": False, "do_predict": True,
                                                  "predict_with_generate": True, "eval_dataset": "identity"}),
                     echo=lambda _: None)
    assert "data: no training (do_train: false); do_predict generates for 3 eval_dataset samples" in plan.lines()
