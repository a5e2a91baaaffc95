"""A real LoRA SFT run on the tiny model: loss falls, the log is written, the adapter merges exactly, and the
trained model answers and then stops on its own (the stop token was learned)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from athanor.text.tokenizer import Tokenizer
from athanor.train.config import load_config
from athanor.train.sft import LOG_FILE, run_sft

# Short texts made of the tiny tokenizer's training corpus, so each answer is a few tokens.
DATA = [
    {"instruction": "capital of France?", "output": "Paris."},
    {"instruction": "hello", "output": "hello world, how are you?"},
]
MULTI_TURN = {"messages": [{"role": "user", "content": "12345"}, {"role": "assistant", "content": "emoji 🙂"},
                           {"role": "user", "content": "and?"}, {"role": "assistant", "content": "The capital."}]}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_hf_dir):
    work = tmp_path_factory.mktemp("sft")
    (work / "alpaca.jsonl").write_text("\n".join(json.dumps(r) for r in DATA))
    (work / "chat.jsonl").write_text(json.dumps(MULTI_TURN))
    (work / "dataset_info.json").write_text(json.dumps({"tiny_chat": {"file_name": "chat.jsonl",
                                                                      "formatting": "openai"}}))
    (work / "sft.yaml").write_text(yaml.safe_dump({
        "model_name_or_path": str(tiny_hf_dir), "stage": "sft", "finetuning_type": "lora", "lora_rank": 8,
        # lm_head too: the random tiny model's final RMSNorm caps its logits near uniform, and only a trainable
        # head can make them peak (real checkpoints do not need this).
        "lora_target": "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj,lm_head",
        "dataset": "alpaca.jsonl,tiny_chat", "cutoff_len": 128, "output_dir": str(work / "out"),
        "per_device_train_batch_size": 3, "learning_rate": 5e-3, "max_steps": 60, "logging_steps": 5,
        "save_steps": 30, "lr_scheduler_type": "constant", "seed": 0,
    }))
    cfg = load_config(work / "sft.yaml", has_cuda=False)
    return run_sft(cfg)


def test_loss_decreases_and_the_log_is_written(trained):
    rows = [json.loads(line) for line in (trained.output_dir / LOG_FILE).read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 12  # every 5 of 60 steps
    assert losses[-1] < 0.1 * losses[0], losses
    assert all(r["tokens_per_s"] > 0 for r in rows if "loss" in r)
    assert trained.num_train_examples == 3


def test_output_dir_has_adapter_tokenizer_config_and_checkpoints(trained):
    out = trained.output_dir
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "train_config.yaml", "loss.png"):
        assert (out / name).is_file(), name
    assert (out / "checkpoint-30").is_dir() and (out / "checkpoint-60").is_dir()
    assert json.loads((out / "adapter_config.json").read_text())["lora_alpha"] == 16  # 2 x rank


def _merged_model(tiny_hf_dir: Path, adapter_dir: Path):
    import transformers

    from athanor.models.loader import load_checkpoint
    from athanor.models.lora import merge_lora

    merged = merge_lora(load_checkpoint(tiny_hf_dir).tensors, adapter_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_hf_dir, dtype=torch.float32).eval()
    missing, unexpected = model.load_state_dict(merged, strict=False)
    assert not unexpected and all("rotary" in m for m in missing), (missing, unexpected)
    return model


def test_merge_lora_equals_base_plus_adapter(trained, tiny_hf_dir):
    import transformers
    from peft import PeftModel

    base = transformers.AutoModelForCausalLM.from_pretrained(tiny_hf_dir, dtype=torch.float32)
    with_adapter = PeftModel.from_pretrained(base, trained.output_dir).eval()
    merged = _merged_model(tiny_hf_dir, trained.output_dir)
    ids = torch.tensor([list(range(3, 40))])
    with torch.no_grad():
        want = with_adapter(input_ids=ids).logits
        got = merged(input_ids=ids).logits
        plain = transformers.AutoModelForCausalLM.from_pretrained(tiny_hf_dir, dtype=torch.float32)(input_ids=ids).logits
    assert (want - plain).abs().max() > 1e-2  # the adapter changed the model...
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)  # ...and merging reproduces it


def test_trained_model_answers_then_stops(trained, tiny_hf_dir):
    tok = Tokenizer.from_hf_dir(trained.output_dir)
    model = _merged_model(tiny_hf_dir, trained.output_dir)
    prompt = tok.encode_chat([{"role": "user", "content": "capital of France?"}], add_generation_prompt=True)
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=30, do_sample=False,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)
    new = out[0, len(prompt):].tolist()
    assert new[-1] == tok.eos_token_id, tok.decode(new, skip_special_tokens=False)
    assert tok.decode(new) == "Paris."


def test_our_engine_serves_the_adapter_from_a_modelfile_and_stops_at_eos(trained, tiny_hf_dir, tmp_path):
    """The serving path: `FROM base` + `ADAPTER output_dir` in a Modelfile, our engine (no transformers), greedy."""
    from athanor.engine.config import EngineConfig
    from athanor.models.store import Store
    from athanor.runtime.llm import LLM

    (tmp_path / "Modelfile").write_text(f"FROM {tiny_hf_dir}\nADAPTER {trained.output_dir}\n")
    Store().create("tiny-sft", tmp_path / "Modelfile")
    llm = LLM.load("tiny-sft", EngineConfig(kv_cache_bytes=8 * 2**20, weight_dtype="float32"))
    done = llm.chat([{"role": "user", "content": "capital of France?"}], {"temperature": 0, "max_tokens": 30})
    assert (done.text, done.finish_reason) == ("Paris.", "stop")
    done = llm.chat([{"role": "user", "content": "hello"}], {"temperature": 0, "max_tokens": 30})
    assert (done.text, done.finish_reason) == ("hello world, how are you?", "stop")


def test_a_gguf_base_trains_and_its_tokenizer_is_saved_as_hf_files(tmp_path, tiny_hf_dir):
    """GGUF bases (the store's built-in smollm2 is one): transformers loads the weights, our tokenizer is rebuilt
    from the metadata and written next to the adapter, so the output renders prompts exactly like the base."""
    from athanor.models.gguf_export import write_gguf
    from athanor.models.loader import load_checkpoint

    ck = load_checkpoint(tiny_hf_dir)
    gguf = write_gguf(ck.config, ck.tensors, ck.tokenizer, tmp_path / "tiny.gguf", "F32")
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in DATA))
    (tmp_path / "sft.yaml").write_text(yaml.safe_dump({
        "model_name_or_path": str(gguf), "dataset": "d.jsonl", "output_dir": str(tmp_path / "out"),
        "max_steps": 3, "logging_steps": 1, "save_steps": 100, "packing": True}))
    result = run_sft(load_config(tmp_path / "sft.yaml", has_cuda=False))
    assert result.num_train_rows == 1  # both samples packed into one row
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in result.log_history if "loss" in r)
    saved, original = Tokenizer.from_hf_dir(result.output_dir), ck.tokenizer
    messages = [{"role": "user", "content": "hello"}]
    assert saved.encode_chat(messages) == original.encode_chat(messages)
    assert saved.stop_token_ids == original.stop_token_ids
    assert (result.output_dir / "adapter_model.safetensors").is_file()


def test_a_gguf_base_loads_to_the_same_logits_as_its_hf_original(tmp_path, tiny_hf_dir):
    import transformers

    from athanor.models.gguf_export import write_gguf
    from athanor.models.loader import load_checkpoint
    from athanor.train.sft import _model_from_gguf

    ck = load_checkpoint(tiny_hf_dir)
    gguf = write_gguf(ck.config, ck.tensors, ck.tokenizer, tmp_path / "tiny.gguf", "F32")
    ours = _model_from_gguf(gguf, load_checkpoint(gguf)).eval()
    ref = transformers.AutoModelForCausalLM.from_pretrained(tiny_hf_dir, dtype=torch.float32).eval()
    ids = torch.tensor([list(range(3, 60))])
    with torch.no_grad():
        torch.testing.assert_close(ours(input_ids=ids).logits, ref(input_ids=ids).logits, atol=1e-5, rtol=1e-4)


def test_resume_from_the_last_checkpoint_continues_exactly(tmp_path, tiny_hf_dir):
    """Steps 5-8 after resuming from checkpoint-4 give the losses and adapter of the run that never stopped
    (optimizer, scheduler, data order and RNG all restored)."""
    from safetensors.torch import load_file

    from athanor.train.run import train

    rows = [*DATA, {"instruction": "12345", "output": "emoji 🙂"}]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "sft.yaml").write_text(yaml.safe_dump({
        "model_name_or_path": str(tiny_hf_dir), "dataset": "d.jsonl", "output_dir": str(tmp_path / "out"),
        "lora_target": "q_proj,v_proj,lm_head", "lora_dropout": 0.1, "learning_rate": 5e-3, "max_steps": 8,
        "save_steps": 4, "logging_steps": 1, "per_device_train_batch_size": 2, "seed": 3}))
    said: list[str] = []
    out = train(tmp_path / "sft.yaml", echo=said.append)
    assert said[0] == "dataset d.jsonl: 3 valid, 0 invalid"  # validation is reported before training
    first = [json.loads(line) for line in (out / LOG_FILE).read_text().splitlines()]
    adapter = load_file(out / "adapter_model.safetensors")
    # "Crash" while saving step 8: checkpoint-8 is half-written (its weights cut short), checkpoint-4 is whole.
    weights = out / "checkpoint-8" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    (out / "adapter_model.safetensors").unlink()
    said.clear()
    out = train(tmp_path / "sft.yaml", ["resume_from_checkpoint=true"], echo=said.append)
    assert any("skipping checkpoint-8: incomplete" in line and "truncated" in line for line in said), said
    rows = [json.loads(line) for line in (out / LOG_FILE).read_text().splitlines()]
    resumed = {r["step"]: r["loss"] for r in rows[len(first):] if "loss" in r}
    assert sorted(resumed) == [5, 6, 7, 8]
    for r in first:
        if r["step"] in resumed and "loss" in r:
            assert abs(r["loss"] - resumed[r["step"]]) < 1e-4, (r["step"], r["loss"], resumed[r["step"]])
    for name, w in load_file(out / "adapter_model.safetensors").items():
        torch.testing.assert_close(w, adapter[name], atol=1e-5, rtol=1e-4)


def test_resume_without_a_checkpoint_is_a_clear_error(tmp_path, tiny_hf_dir):
    from athanor.errors import AthanorError
    from athanor.train.run import train

    (tmp_path / "d.jsonl").write_text(json.dumps(DATA[0]))
    (tmp_path / "sft.yaml").write_text(yaml.safe_dump({"model_name_or_path": str(tiny_hf_dir), "dataset": "d.jsonl",
                                                       "output_dir": str(tmp_path / "out"),
                                                       "resume_from_checkpoint": True}))
    with pytest.raises(AthanorError, match="holds no checkpoint-\\* folder yet"):
        train(tmp_path / "sft.yaml")


def test_memory_estimate_counts_weights_exactly_and_shrinks_with_checkpointing(tiny_hf_dir):
    import transformers

    from athanor.train.callbacks import estimate_memory

    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_hf_dir, dtype=torch.float32)
    plain = estimate_memory(model, batch_size=2, seq_len=128)
    assert plain.weights == sum(p.numel() * 4 for p in model.parameters())
    assert plain.grads_and_optimizer == plain.weights * 3  # full fine-tuning: grad + 2 AdamW moments, fp32
    assert estimate_memory(model, 2, 128, gradient_checkpointing=True).activations < plain.activations
    assert "memory estimate: ~" in plain.summary()


def _quick_cfg(tmp_path: Path, tiny_hf_dir: Path, **keys):
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in DATA * 2))
    (tmp_path / "sft.yaml").write_text(yaml.safe_dump({
        "model_name_or_path": str(tiny_hf_dir), "dataset": "d.jsonl", "output_dir": str(tmp_path / "out"),
        "max_steps": 2, "logging_steps": 1, "save_steps": 1, "learning_rate": 1e-2, **keys}))
    return load_config(tmp_path / "sft.yaml", has_cuda=False)


def test_val_size_holds_samples_out_and_logs_eval_loss(tmp_path, tiny_hf_dir):
    result = run_sft(_quick_cfg(tmp_path, tiny_hf_dir, val_size=0.5), echo=lambda _: None)
    assert result.num_train_examples == 2
    rows = [json.loads(line) for line in (result.output_dir / LOG_FILE).read_text().splitlines()]
    assert [r["step"] for r in rows if "eval_loss" in r] == [1, 2]


def test_freeze_trains_only_the_last_layers_and_full_saves_a_model(tmp_path, tiny_hf_dir):
    from safetensors.torch import load_file

    base = load_file(tiny_hf_dir / "model.safetensors")
    result = run_sft(_quick_cfg(tmp_path / "freeze", tiny_hf_dir, finetuning_type="freeze",
                                freeze_trainable_layers=1), echo=lambda _: None)
    trained = load_file(result.output_dir / "model.safetensors")
    changed = {k for k in base if not torch.equal(base[k], trained[k])}
    assert changed and all(k.startswith("model.layers.1.") for k in changed), sorted(changed)
    result = run_sft(_quick_cfg(tmp_path / "full", tiny_hf_dir, finetuning_type="full"), echo=lambda _: None)
    trained = load_file(result.output_dir / "model.safetensors")
    assert not torch.equal(trained["model.embed_tokens.weight"], base["model.embed_tokens.weight"])


def test_unknown_lora_target_is_a_clear_error(tmp_path, tiny_hf_dir):
    from athanor.errors import AthanorError

    with pytest.raises(AthanorError, match="lora_target: .*qkv_proj"):
        run_sft(_quick_cfg(tmp_path, tiny_hf_dir, lora_target="qkv_proj"), echo=lambda _: None)


def test_out_of_memory_message_names_the_knobs_with_current_values():
    # Only the message is tested: a real OOM cannot be produced safely on a shared CPU machine.
    from athanor.train.config import TrainConfig
    from athanor.train.sft import out_of_memory_message

    msg = out_of_memory_message(TrainConfig(model_name_or_path="m", per_device_train_batch_size=4, cutoff_len=2048))
    assert msg.startswith("out of memory while training; lower per_device_train_batch_size=4")
    assert "cutoff_len=2048" in msg and "gradient_checkpointing=true" in msg and "\n" not in msg


def test_lora_with_gradient_checkpointing_still_trains_the_adapter(tmp_path, tiny_hf_dir):
    from safetensors.torch import load_file

    result = run_sft(_quick_cfg(tmp_path, tiny_hf_dir, gradient_checkpointing=True), echo=lambda _: None)
    lora_b = [w for k, w in load_file(result.output_dir / "adapter_model.safetensors").items() if "lora_B" in k]
    assert lora_b and all(w.abs().sum() > 0 for w in lora_b)  # B starts at zero: non-zero means gradients flowed


def test_training_works_after_something_turned_autograd_off(tmp_path, tiny_hf_dir):
    # Our inference engine calls torch.set_grad_enabled(False) process-wide when it loads a model.
    torch.set_grad_enabled(False)
    try:
        result = run_sft(_quick_cfg(tmp_path, tiny_hf_dir), echo=lambda _: None)
    finally:
        torch.set_grad_enabled(True)
    assert all(np.isfinite(r["loss"]) for r in result.log_history if "loss" in r)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_qlora_without_cuda_is_refused_rather_than_silently_ignored(tmp_path, tiny_hf_dir, monkeypatch):
    from athanor.errors import AthanorError

    monkeypatch.setattr("athanor.train.qlora.has_bitsandbytes", lambda: True)
    (tmp_path / "d.jsonl").write_text(json.dumps(DATA[0]))
    (tmp_path / "q.yaml").write_text(yaml.safe_dump({"model_name_or_path": str(tiny_hf_dir), "dataset": "d.jsonl",
                                                     "quantization_bit": 4, "output_dir": str(tmp_path / "out")}))
    cfg = load_config(tmp_path / "q.yaml", has_cuda=True)  # valid config on a GPU machine
    with pytest.raises(AthanorError, match="4-bit QLoRA needs a CUDA GPU"):
        run_sft(cfg, echo=lambda _: None)


def test_bf16_mixed_precision_runs_on_cpu(tmp_path, tiny_hf_dir):
    result = run_sft(_quick_cfg(tmp_path, tiny_hf_dir, bf16=True), echo=lambda _: None)
    assert all(np.isfinite(r["loss"]) for r in result.log_history if "loss" in r)


def test_eval_dataset_is_held_out_whole_and_train_keeps_every_sample(tmp_path, tiny_hf_dir):
    from athanor.train.sft import build_datasets

    (tmp_path / "held.jsonl").write_text(json.dumps(MULTI_TURN))
    cfg = _quick_cfg(tmp_path, tiny_hf_dir, eval_dataset="held.jsonl")
    lines = []
    train, held, num_train = build_datasets(cfg, Tokenizer.from_hf_dir(tiny_hf_dir), lines.append)
    assert num_train == len(train) == 2 * len(DATA) and len(held) == 1
    assert held[0].num_label_tokens > 0
    assert any(line.startswith("5 samples, ") and line.endswith(", 1 held out") for line in lines), lines
