"""DoRA and OFT adapters merged by athanor (models/lora.py, models/oft.py) give the logits of peft's unmerged base +
adapter model, and the weights of peft's own merge_and_unload (tiny random models, adapters with random weights)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from athanor.errors import AthanorError
from athanor.models.lora import merge_adapters
from athanor.models.oft import block_rotation

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

IDS = torch.tensor([[1, 5, 9, 33, 70, 2, 101, 7, 64, 12]])


def tiny_llama(seed: int = 1) -> torch.nn.Module:
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=128, tie_word_embeddings=False)
    return transformers.LlamaForCausalLM(cfg).eval()


def adapter_and_reference(config: object, out: Path) -> tuple[dict, torch.Tensor, dict]:
    """(base weights, logits of peft's base + adapter, peft's merge_and_unload weights) for a random adapter."""
    model = tiny_llama()
    base = {k: v.detach().clone() for k, v in model.state_dict().items()}
    pm = peft.get_peft_model(model, config).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_" in name or "oft_R" in name or "modules_to_save" in name:
                p.add_(torch.randn_like(p) * 0.1)  # DoRA magnitudes start at ||W||_row: keep them near it
        logits = pm(input_ids=IDS).logits
    pm.save_pretrained(str(out))
    merged = {k: v.detach().clone() for k, v in pm.merge_and_unload().state_dict().items()}
    return base, logits, merged


def logits_of(weights: dict) -> torch.Tensor:
    model = tiny_llama(seed=99)  # other random weights: everything must come from `weights`
    model.load_state_dict(weights)
    with torch.no_grad():
        return model(input_ids=IDS).logits


def check(config: object, tmp_path: Path) -> dict:
    base, want_logits, peft_merged = adapter_and_reference(config, tmp_path / "adapter")
    ours = merge_adapters(base, [str(tmp_path / "adapter")])
    assert ours.keys() == peft_merged.keys()
    for name, want in peft_merged.items():
        torch.testing.assert_close(ours[name], want, atol=1e-5, rtol=1e-5, msg=name)
    torch.testing.assert_close(logits_of(ours), want_logits, atol=1e-4, rtol=1e-4)
    return ours


@pytest.mark.parametrize("extra", [{}, {"use_rslora": True, "rank_pattern": {"v_proj": 2}}])
def test_dora_merge_equals_peft(tmp_path, extra):
    config = peft.LoraConfig(r=4, lora_alpha=8, use_dora=True, target_modules=["q_proj", "v_proj", "gate_proj"],
                             **extra)
    base = tiny_llama().state_dict()
    ours = check(config, tmp_path)
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.allclose(ours[q], base[q])  # the adapter did something


@pytest.mark.parametrize("extra", [
    {"oft_block_size": 8},
    {"r": 4, "oft_block_size": 0, "use_cayley_neumann": False},  # oft_rank: 4 blocks; the exact Cayley transform
    {"oft_block_size": 16, "block_share": True, "num_cayley_neumann_terms": 3},
    {"oft_block_size": 8, "modules_to_save": ["lm_head"]},
])
def test_oft_merge_equals_peft(tmp_path, extra):
    config = peft.OFTConfig(**{"r": 0, "target_modules": ["q_proj", "v_proj", "down_proj"], **extra})
    base = tiny_llama().state_dict()
    ours = check(config, tmp_path)
    down = "model.layers.1.mlp.down_proj.weight"  # 128 inputs
    assert not torch.allclose(ours[down], base[down])
    if extra.get("use_cayley_neumann") is False:  # an exact rotation of the inputs: every row keeps its length
        torch.testing.assert_close(ours[down].norm(dim=1), base[down].norm(dim=1), atol=1e-4, rtol=1e-4)


def test_exact_cayley_rotation_is_orthogonal_and_the_neumann_series_approximates_its_transpose():
    packed = torch.randn(3, 6, generator=torch.Generator().manual_seed(0)) * 0.05  # 3 blocks of 4 x 4
    exact = block_rotation(packed, 12, neumann=False)
    torch.testing.assert_close(exact @ exact.T, torch.eye(12), atol=1e-6, rtol=0)
    # peft's series sums to (I + Q)(I - Q)^-1: the same rotation turned the other way
    torch.testing.assert_close(block_rotation(packed, 12, neumann=True, terms=12), exact.T, atol=1e-6, rtol=0)
    assert torch.count_nonzero(exact[:4, 4:]) == 0  # block-diagonal


def test_refusals(tmp_path):
    model = tiny_llama()
    base = {k: v.detach().clone() for k, v in model.state_dict().items()}
    pm = peft.get_peft_model(model, peft.OFTConfig(r=0, oft_block_size=8, target_modules=["q_proj"]))
    pm.save_pretrained(str(tmp_path / "oft"))
    cfg = json.loads((tmp_path / "oft" / "adapter_config.json").read_text())
    (tmp_path / "oft" / "adapter_config.json").write_text(json.dumps({**cfg, "coft": True}))
    with pytest.raises(AthanorError, match="coft=true is not supported; merge it with peft first"):
        merge_adapters(base, [str(tmp_path / "oft")])
    (tmp_path / "oft" / "adapter_config.json").write_text(json.dumps({**cfg, "peft_type": "BOFT"}))
    with pytest.raises(AthanorError, match="peft_type 'BOFT' is not supported"):
        merge_adapters(base, [str(tmp_path / "oft")])


@pytest.mark.parametrize("method", [{"finetuning_type": "oft", "oft_block_size": 16, "oft_target": "all"},
                                    {"finetuning_type": "lora", "lora_rank": 4, "lora_target": "all",
                                     "use_dora": True}])
def test_trained_adapter_exported_from_an_lf_yaml_gives_peft_logits(tmp_path, tiny_hf_dir, method):
    """`athanor train` one step (LF keys), then `athanor export` with LF's merge YAML (adapter_name_or_path):
    the merged model in transformers gives the logits of peft's base + the trained adapter."""
    import yaml

    from athanor.infer_config import export_from_config
    from athanor.train.run import train
    from tests.train.test_lf_configs import write_lf_data_dir

    data = write_lf_data_dir(tmp_path)
    run = {"model_name_or_path": str(tiny_hf_dir), "stage": "sft", "do_train": True, "dataset": "identity",
           "template": "qwen3_nothink", "cutoff_len": 64, "max_samples": 2, "max_steps": 1, "learning_rate": 5e-2,
           "output_dir": str(tmp_path / "saves"), "report_to": "none", **method}
    (data / "train.yaml").write_text(yaml.safe_dump(run))
    train(data / "train.yaml", echo=lambda _: None)
    merge = {"model_name_or_path": str(tiny_hf_dir), "adapter_name_or_path": str(tmp_path / "saves"),
             "template": "qwen3_nothink", "finetuning_type": method["finetuning_type"], "trust_remote_code": True,
             "export_dir": str(tmp_path / "merged"), "export_size": 5, "export_device": "cpu",
             "export_legacy_format": False}
    (tmp_path / "merge.yaml").write_text(yaml.safe_dump(merge))
    out = export_from_config(tmp_path / "merge.yaml", echo=lambda _: None)
    ids = torch.tensor([[3, 17, 42, 99, 5, 250, 8]])
    base = transformers.AutoModelForCausalLM.from_pretrained(str(tiny_hf_dir)).eval()
    with torch.no_grad():
        before = base(input_ids=ids).logits
        want = peft.PeftModel.from_pretrained(base, str(tmp_path / "saves")).eval()(input_ids=ids).logits
        got = transformers.AutoModelForCausalLM.from_pretrained(str(out)).eval()(input_ids=ids).logits
    assert (want - before).abs().max() > 1e-3  # one step moved the adapter away from the identity
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
