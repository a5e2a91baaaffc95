"""merge_lora vs peft's own merge_and_unload on tiny random models (local only, never a hub id)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from athanor.errors import AthanorError
from athanor.models.lora import merge_lora

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")


def tiny_llama() -> torch.nn.Module:
    cfg = transformers.LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=128,
        tie_word_embeddings=False,
    )
    return transformers.LlamaForCausalLM(cfg)


def make_adapter(model: torch.nn.Module, out: Path, **lora_kwargs) -> tuple[dict, dict]:
    """Wrap `model` with peft, randomize the LoRA (B is zero at init) and save it to `out`.
    Returns (base state dict, peft-merged state dict)."""
    torch.manual_seed(0)
    base = {k: v.detach().clone() for k, v in model.state_dict().items()}
    pm = peft.get_peft_model(model, peft.LoraConfig(**lora_kwargs))
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_" in name or "modules_to_save" in name:
                p.normal_(std=0.1)
    pm.save_pretrained(str(out))
    merged = {k: v.detach().clone() for k, v in pm.merge_and_unload().state_dict().items()}
    return base, merged


def assert_same(ours: dict, ref: dict) -> None:
    assert ours.keys() == ref.keys()
    for k, want in ref.items():
        assert ours[k].shape == want.shape, k
        torch.testing.assert_close(ours[k], want, atol=1e-5, rtol=0, msg=k)


@pytest.fixture(scope="module")
def llama_adapter(tmp_path_factory) -> tuple[dict, dict, Path]:
    out = tmp_path_factory.mktemp("lora") / "adapter"
    torch.manual_seed(1)
    base, merged = make_adapter(tiny_llama(), out, r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "gate_proj"])
    return base, merged, out


def test_merge_matches_peft(llama_adapter):
    base, merged, adapter = llama_adapter
    ours = merge_lora(base, adapter)
    assert_same(ours, merged)
    changed = [k for k in base if not torch.equal(base[k], ours[k])]
    assert len(changed) == 6 and all(("q_proj" in k or "v_proj" in k or "gate_proj" in k) for k in changed)


def test_inputs_not_modified_and_dtype_kept(llama_adapter):
    base, merged, adapter = llama_adapter
    before = {k: v.clone() for k, v in base.items()}
    half = {k: v.to(torch.bfloat16) for k, v in base.items()}
    ours = merge_lora(half, adapter)
    assert all(torch.equal(before[k], base[k]) for k in base)
    assert all(v.dtype == torch.bfloat16 for v in ours.values())
    torch.testing.assert_close(
        ours["model.layers.1.mlp.gate_proj.weight"].float(),
        merged["model.layers.1.mlp.gate_proj.weight"],
        atol=2e-2,
        rtol=0,
    )


def test_rslora_patterns_and_modules_to_save_match_peft(tmp_path):
    torch.manual_seed(2)
    base, merged = make_adapter(
        tiny_llama(),
        tmp_path / "a",
        r=4,
        lora_alpha=16,
        use_rslora=True,
        target_modules=["q_proj", "v_proj", "o_proj"],
        rank_pattern={"v_proj": 8},
        alpha_pattern={"layers.1.self_attn.o_proj": 3},
        modules_to_save=["lm_head"],
    )
    assert_same(merge_lora(base, tmp_path / "a"), merged)


def test_fan_in_fan_out_matches_peft_on_gpt2(tmp_path):
    torch.manual_seed(3)
    gpt2 = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=128, n_positions=64)
    )
    base, merged = make_adapter(gpt2, tmp_path / "g", r=4, lora_alpha=8, target_modules=["c_attn"], fan_in_fan_out=True)
    assert_same(merge_lora(base, tmp_path / "g"), merged)


def test_missing_files(tmp_path, llama_adapter):
    base, _, adapter = llama_adapter
    with pytest.raises(AthanorError, match=r"^LoRA adapter .*nope: not a directory"):
        merge_lora(base, tmp_path / "nope")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "adapter_config.json").write_text((adapter / "adapter_config.json").read_text())
    with pytest.raises(AthanorError, match=r"^LoRA adapter .*half: missing adapter_model.safetensors"):
        merge_lora(base, tmp_path / "half")


def test_key_matching_no_base_tensor(llama_adapter):
    base, _, adapter = llama_adapter
    base = {k: v for k, v in base.items() if k != "model.layers.1.self_attn.v_proj.weight"}
    with pytest.raises(
        AthanorError, match=r"^LoRA adapter .*adapter: model.layers.1.self_attn.v_proj matches no weight"
    ):
        merge_lora(base, adapter)


def test_shape_mismatch(llama_adapter):
    base, _, adapter = llama_adapter
    base = dict(base, **{"model.layers.0.mlp.gate_proj.weight": torch.zeros(128, 32)})
    with pytest.raises(AthanorError, match=r"gate_proj.weight would be \(128, 64\) but the base model has \(128, 32\)"):
        merge_lora(base, adapter)


def test_dora_without_magnitude_vectors_refused(tmp_path, llama_adapter):
    base, _, adapter = llama_adapter
    dora = tmp_path / "dora"
    dora.mkdir()
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    (dora / "adapter_config.json").write_text(json.dumps({**cfg, "use_dora": True}))
    (dora / "adapter_model.safetensors").write_bytes((adapter / "adapter_model.safetensors").read_bytes())
    with pytest.raises(AthanorError, match="use_dora=true but .* lacks its lora_A/lora_B or lora_magnitude_vector"):
        merge_lora(base, dora)
