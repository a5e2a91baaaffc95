"""The Hugging Face directory loader on real files written by transformers: sharded checkpoints, generation
defaults, one-line errors for broken directories, `show` metadata, and bf16 on CPU against transformers' fp32."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable

import pytest
import torch
from safetensors.torch import load_file, save_file

from athanor.engine.config import EngineConfig
from athanor.errors import ModelFormatError, UnsupportedArchitectureError
from athanor.models.loader import inspect_weights, load_checkpoint
from athanor.nn.llama import build_model
from athanor.runtime.llm import LLM
from tests.nn.test_parity_tiny import full_logits, ours_from_hf
from tests.nn.tiny import ARCHS, tiny_hf_model

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "generation_config.json")


def model_dir(tokenizer_dir: Path, dest: Path, hf_model, **save_kw) -> Path:
    """`hf_model` saved by transformers into `dest`, with the tokenizer files of the tiny Qwen2 directory."""
    hf_model.save_pretrained(dest, **save_kw)
    for name in TOKENIZER_FILES:
        shutil.copy(tokenizer_dir / name, dest / name)
    return dest


def hf_logits(hf_model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return hf_model(torch.tensor([ids])).logits[0].float()  # (T, V)


# ---------------------------------------------------------------- sharded checkpoints


@pytest.mark.parametrize("arch", ["qwen2", "llama3"])  # q/k/v bias; tied embeddings + llama3 rope scaling
def test_sharded_checkpoint_loads_every_tensor(arch, tiny_hf_dir, tmp_path):
    hf = tiny_hf_model(arch, vocab=300)
    d = model_dir(tiny_hf_dir, tmp_path / arch, hf, max_shard_size="20KB")
    assert len(list(d.glob("*.safetensors"))) > 1 and (d / "model.safetensors.index.json").is_file()

    ckpt = load_checkpoint(d)
    state = hf.state_dict()
    if hf.config.tie_word_embeddings:  # saved once, as the embedding
        del state["lm_head.weight"]
    assert ckpt.tensors.keys() == state.keys()
    for name, t in state.items():
        assert torch.equal(ckpt.tensors[name], t), name

    ids = torch.randint(0, 300, (29,), generator=torch.Generator().manual_seed(0)).tolist()
    model = build_model(ckpt.config, ckpt.tensors)
    torch.testing.assert_close(full_logits(model, ids), hf_logits(hf, ids), atol=1e-4, rtol=1e-4)


def test_shards_come_from_the_index(tiny_hf_dir, tmp_path):
    d = model_dir(tiny_hf_dir, tmp_path / "m", tiny_hf_model("qwen2", vocab=300), max_shard_size="20KB")
    (d / "stray.safetensors").write_bytes(os.urandom(100))  # not in the index: never opened
    assert len(load_checkpoint(d).tensors) > 0
    shard = sorted(d.glob("model-*.safetensors"))[1]
    shard.unlink()
    with pytest.raises(ModelFormatError, match=shard.name) as e:
        load_checkpoint(d)
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------- generation_config.json


def _with_generation_config(tiny_hf_dir: Path, dest: Path, gen: dict) -> Path:
    shutil.copytree(tiny_hf_dir, dest)
    (dest / "generation_config.json").write_text(json.dumps(gen))
    return dest


def _load_llm(d: Path) -> LLM:
    return LLM.load(str(d), EngineConfig(num_kvcache_blocks=32, block_size=16))


def test_generation_config_gives_sampling_defaults_and_stop_ids(tiny_hf_dir, tmp_path):
    vocab = json.loads((tiny_hf_dir / "tokenizer.json").read_text())["model"]["vocab"]
    eos_ids = [vocab["<|im_end|>"], vocab["<|endoftext|>"]]
    gen = {"do_sample": True, "temperature": 0.6, "top_p": 0.85, "top_k": 7, "repetition_penalty": 1.1,
           "eos_token_id": eos_ids}
    d = _with_generation_config(tiny_hf_dir, tmp_path / "m", gen)

    assert load_checkpoint(d).generation_defaults == gen
    llm = _load_llm(d)
    sp = llm.sampling_params()
    assert (sp.temperature, sp.top_p, sp.top_k, sp.repetition_penalty) == (0.6, 0.85, 7, 1.1)
    overridden = llm.sampling_params({"temperature": 0.2})
    assert (overridden.temperature, overridden.top_p) == (0.2, 0.85)
    assert set(eos_ids) <= llm.tokenizer.stop_token_ids
    assert set(eos_ids) <= llm.engine.eos_token_ids  # what actually ends a sequence


def test_do_sample_false_means_greedy(tiny_hf_dir, tmp_path):
    d = _with_generation_config(tiny_hf_dir, tmp_path / "m", {"do_sample": False, "temperature": 0.6, "top_p": 0.9})
    llm = _load_llm(d)
    assert llm.sampling_params().temperature == 0.0 and llm.sampling_params().is_greedy
    assert llm.sampling_params({"temperature": 0.7}).temperature == 0.7  # a request can still ask to sample


# ---------------------------------------------------------------- bad input: one line naming the file


def _cut_in_half(d: Path) -> None:
    f = d / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _edit_config(**changes) -> Callable[[Path], None]:
    def edit(d: Path) -> None:
        cfg = json.loads((d / "config.json").read_text())
        cfg.update(changes)
        (d / "config.json").write_text(json.dumps(cfg))
    return edit


def _edit_tensors(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def rewrite(d: Path) -> None:
        tensors = load_file(d / "model.safetensors")
        edit(tensors)
        save_file(tensors, d / "model.safetensors")
    return rewrite


def _drop_key(name: str) -> Callable[[Path], None]:
    def drop(d: Path) -> None:
        cfg = json.loads((d / "config.json").read_text())
        del cfg[name]
        (d / "config.json").write_text(json.dumps(cfg))
    return drop


# (id, how to break the directory, error type, strings the message must hold; "{d}" is the directory)
BROKEN = [
    ("truncated-safetensors", _cut_in_half, ModelFormatError, ["{d}/model.safetensors"]),
    ("random-bytes-safetensors", lambda d: (d / "model.safetensors").write_bytes(os.urandom(4096)),
     ModelFormatError, ["{d}/model.safetensors"]),
    ("invalid-json-config", lambda d: (d / "config.json").write_text('{"vocab_size": 300,'),
     ModelFormatError, ["{d}/config.json", "not valid JSON"]),
    ("no-config", lambda d: (d / "config.json").unlink(), ModelFormatError, ["{d}", "config.json"]),
    ("config-missing-key", _drop_key("hidden_size"), ModelFormatError, ["{d}/config.json", "hidden_size"]),
    ("no-safetensors", lambda d: (d / "model.safetensors").unlink(), ModelFormatError, ["{d}", "*.safetensors"]),
    ("no-tokenizer", lambda d: (d / "tokenizer.json").unlink(), ModelFormatError, ["{d}", "tokenizer.json"]),
    ("unsupported-arch", _edit_config(architectures=["GPT2LMHeadModel"], model_type="gpt2"),
     UnsupportedArchitectureError,
     ["{d}/config.json", "GPT2LMHeadModel", "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM",
      "Qwen3ForCausalLM"]),
    ("quantized", _edit_config(quantization_config={"quant_method": "gptq", "bits": 4}), ModelFormatError,
     ["{d}/config.json", "gptq"]),
    ("missing-tensor", _edit_tensors(lambda t: t.pop("model.layers.1.mlp.up_proj.weight")), ModelFormatError,
     ["{d}", "model.layers.1.mlp.up_proj.weight"]),
    ("wrong-shape", _edit_tensors(lambda t: t.update({"model.layers.0.self_attn.k_proj.weight": torch.zeros(3, 64)})),
     ModelFormatError, ["{d}/model.safetensors", "model.layers.0.self_attn.k_proj.weight", "[3, 64]", "[32, 64]"]),
    ("extra-tensor", _edit_tensors(lambda t: t.update({"vision_tower.proj.weight": torch.zeros(2, 2)})),
     ModelFormatError, ["{d}", "vision_tower.proj.weight"]),
]


@pytest.mark.parametrize(("break_dir", "error", "needles"), [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_broken_directory_is_one_line_naming_the_file(break_dir, error, needles, tiny_hf_dir, tmp_path):
    d = shutil.copytree(tiny_hf_dir, tmp_path / "m")
    break_dir(d)
    with pytest.raises(error) as e:
        load_checkpoint(d)
    assert type(e.value) is error  # exactly this type, not merely an AthanorError
    message = str(e.value)
    assert "\n" not in message
    for needle in needles:
        assert needle.format(d=d) in message, message


def test_inspect_unsupported_arch_names_the_file(tiny_hf_dir, tmp_path):
    d = shutil.copytree(tiny_hf_dir, tmp_path / "m")
    _edit_config(architectures=["GPT2LMHeadModel"], model_type="gpt2")(d)
    with pytest.raises(UnsupportedArchitectureError, match="config.json.*GPT2LMHeadModel"):
        inspect_weights(d)


# ---------------------------------------------------------------- inspect_weights (`athanor show`)


@pytest.mark.parametrize("arch", ARCHS)
def test_inspect_weights_matches_transformers(arch, tiny_hf_dir, tmp_path):
    hf = tiny_hf_model(arch, vocab=300)
    d = model_dir(tiny_hf_dir, tmp_path / arch, hf)
    assert hf.config.tie_word_embeddings == (arch in ("llama3", "gemma3"))  # both cases are counted below
    info = inspect_weights(d)
    assert info["format"] == "hf"
    assert info["arch"] == {"llama3": "llama"}.get(arch, arch)
    assert info["num_parameters"] == sum(p.numel() for p in hf.parameters())  # tied lm_head counted once
    assert info["context_length"] == 512
    assert info["chat_template"] == json.loads((tiny_hf_dir / "tokenizer_config.json").read_text())["chat_template"]


# ---------------------------------------------------------------- bf16 on CPU


def test_bf16_on_cpu_is_close_to_transformers_fp32(tmp_path):
    hf = tiny_hf_model("llama", seed=3)
    model = ours_from_hf(hf, tmp_path, dtype=torch.bfloat16)  # save_pretrained, then build_model(..., dtype)
    assert model.embed_tokens.weight.dtype == torch.bfloat16 and model.lm_head.weight.dtype == torch.bfloat16
    ids = torch.randint(0, 256, (48,), generator=torch.Generator().manual_seed(3)).tolist()
    got, ref = full_logits(model, ids), hf_logits(hf, ids)  # (T, V) each
    # bf16 keeps 8 significant bits (relative step 2^-8 ~ 0.4%); these logits reach |0.6| with std ~0.16, and
    # two layers of rounded matmuls measure a max error of ~0.005. 0.02 leaves 4x headroom yet is 1/8 of the
    # logits' spread, so a wrong layer or a missed cast still fails (the guard below keeps that true).
    atol = 0.02
    assert ref.std() > 5 * atol
    assert (got - ref).abs().max() < atol
    assert (got.argmax(-1) == ref.argmax(-1)).float().mean() >= 0.9

