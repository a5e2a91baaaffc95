"""`export_model`: merged HF / GGUF exports give the same output as base + adapter (transformers + peft as the
reference, and our engine with a Modelfile ADAPTER line); registration; one-line errors. Tiny random Qwen2."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from athanor.engine.config import EngineConfig
from athanor.engine.sampling_params import SamplingParams
from athanor.errors import AthanorError, ModelNotFoundError
from athanor.models.loader import load_checkpoint
from athanor.models.store import Store
from athanor.runtime.llm import LLM
from athanor.train.export import export_model

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

INPUT_IDS = torch.tensor([[1, 5, 7, 9, 100, 200, 17, 42, 3, 250]])  # (1, T) ids inside the tiny 300-token vocab
MESSAGES = [{"role": "user", "content": "The capital of France is"}]
GREEDY = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True)  # always 16 tokens to compare
# max |logit diff| / max |logit| vs the F32 export. Measured on this seeded model: F16 8.8e-4 (weights rounded to
# 2^-11 relative), Q8_0 1.4e-2 (each weight within absmax/254 of its 32-weight block); ~3x margin. A wrong tensor
# (layout, permutation, missing merge) is off by O(1).
REL_TOL = {"F16": 3e-3, "Q8_0": 5e-2, "Q6_K": 5e-2, "Q4_K_M": 0.2}  # K-types fall back per tensor on tiny rows


def _engine_config() -> EngineConfig:
    return EngineConfig(weight_dtype="float32", num_kvcache_blocks=64)


def _greedy_ids(llm: LLM) -> list[int]:
    ids = llm.generate_ids([llm.chat_prompt(MESSAGES)], GREEDY)[0].token_ids
    assert len(ids) == 16
    return ids


def _hf_logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(INPUT_IDS).logits[0]  # (T, vocab)


@pytest.fixture(scope="module")
def adapter(tiny_hf_dir, tmp_path_factory) -> tuple[Path, torch.Tensor]:
    """A peft LoRA on every linear layer with random nonzero B; returns (adapter dir, peft base+adapter logits)."""
    out = tmp_path_factory.mktemp("export") / "adapter"
    model = transformers.AutoModelForCausalLM.from_pretrained(str(tiny_hf_dir)).eval()
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    pm = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_" in name:
                p.normal_(std=0.1)
    pm.save_pretrained(str(out), save_embedding_layers=False)
    pm.eval()
    return out, _hf_logits(pm)


@pytest.fixture(scope="module")
def hf_export(tiny_hf_dir, adapter, tmp_path_factory) -> Path:
    return export_model(str(tiny_hf_dir), str(adapter[0]), tmp_path_factory.mktemp("export") / "merged", "hf")


@pytest.fixture(scope="module")
def hf_greedy(hf_export) -> list[int]:
    return _greedy_ids(LLM.load(str(hf_export), _engine_config()))


# ---------------------------------------------------------------- HF directory


def test_hf_export_loads_in_transformers_with_base_plus_adapter_logits(hf_export, adapter, tiny_hf_dir):
    peft_logits = adapter[1]
    merged = transformers.AutoModelForCausalLM.from_pretrained(str(hf_export)).eval()
    torch.testing.assert_close(_hf_logits(merged), peft_logits, atol=1e-4, rtol=0)
    base = transformers.AutoModelForCausalLM.from_pretrained(str(tiny_hf_dir)).eval()
    assert (_hf_logits(base) - peft_logits).abs().max() > 1e-2  # the adapter matters, so the check can fail


def test_hf_export_tokenizer_and_generation_config(hf_export, tiny_hf_dir):
    tok = transformers.AutoTokenizer.from_pretrained(str(hf_export))
    ours = load_checkpoint(tiny_hf_dir).tokenizer
    assert tok.eos_token == "<|im_end|>"
    text = tok.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert text == ours.apply_chat_template(MESSAGES)
    assert tok(text, add_special_tokens=True)["input_ids"] == ours.encode(text)
    gen = transformers.GenerationConfig.from_pretrained(str(hf_export))
    assert gen.eos_token_id == ours.eos_token_id


def test_hf_export_greedy_equals_modelfile_adapter_in_our_engine(hf_greedy, tiny_hf_dir, adapter, tmp_path):
    mf = tmp_path / "Modelfile"
    mf.write_text(f"FROM {tiny_hf_dir}\nADAPTER {adapter[0]}\n")
    Store().create("tiny-lora", mf)
    assert _greedy_ids(LLM.load("tiny-lora", _engine_config())) == hf_greedy
    assert _greedy_ids(LLM.load(str(tiny_hf_dir), _engine_config())) != hf_greedy  # the adapter changes the output


@pytest.mark.parametrize("arch", ["llama", "llama3", "mistral", "qwen3"])
def test_config_json_round_trips_every_arch(arch, tmp_path):
    """No adapter: the export of each arch (rope scaling, tied embeddings, head_dim) gives transformers' logits."""
    from tests.conftest import write_tiny_hf_dir

    src = write_tiny_hf_dir(tmp_path / arch, arch=arch)
    out = export_model(str(src), None, tmp_path / "out", "hf")
    want = _hf_logits(transformers.AutoModelForCausalLM.from_pretrained(str(src)).eval())
    got = transformers.AutoModelForCausalLM.from_pretrained(str(out)).eval()
    assert type(got).__name__ == {"llama3": "LlamaForCausalLM"}.get(arch, f"{arch.capitalize()}ForCausalLM")
    torch.testing.assert_close(_hf_logits(got), want, atol=1e-5, rtol=0)


# ---------------------------------------------------------------- GGUF


def test_gguf_f32_greedy_equals_hf_export_and_registers(tiny_hf_dir, adapter, hf_greedy, tmp_path):
    path = export_model(str(tiny_hf_dir), str(adapter[0]), tmp_path / "m.gguf", "gguf", "F32", register_as="tiny-ft")
    assert path == (tmp_path / "m.gguf").resolve()
    assert _greedy_ids(LLM.load(str(path), _engine_config())) == hf_greedy
    assert _greedy_ids(LLM.load("tiny-ft", _engine_config())) == hf_greedy
    shown = Store().show("tiny-ft")
    assert shown["architecture"] == "qwen2" and shown["format"] == "gguf" and shown["weights"] == str(path)
    assert "<|im_start|>" in shown["template"]


@pytest.mark.parametrize("gguf_type", ["F16", "Q8_0", "Q4_K_M", "Q6_K"])
def test_gguf_quantized_loads_with_close_logits(gguf_type, tiny_hf_dir, adapter, hf_export, tmp_path):
    path = export_model(str(tiny_hf_dir), str(adapter[0]), tmp_path / "m.gguf", "gguf", gguf_type)
    assert len(_greedy_ids(LLM.load(str(path), _engine_config()))) == 16  # our engine loads and runs it
    # The logits of what the file holds, through the reference implementation (same arch, dequantized weights).
    model = transformers.AutoModelForCausalLM.from_pretrained(str(hf_export)).eval()
    want = _hf_logits(model)
    model.load_state_dict(load_checkpoint(path).tensors, strict=True)
    diff = (_hf_logits(model) - want).abs().max() / want.abs().max()
    assert 0 < diff < REL_TOL[gguf_type], f"{gguf_type}: max |logit diff| / max |logit| = {diff:.2e}"


def test_store_name_base_with_its_adapter(tiny_hf_dir, adapter, hf_greedy, tmp_path):
    """A store name as base brings its manifest's ADAPTER along: exporting it with no --adapter is the same model."""
    mf = tmp_path / "Modelfile"
    mf.write_text(f"FROM {tiny_hf_dir}\nADAPTER {adapter[0]}\nPARAMETER top_k 7\n")
    Store().create("tiny-lora", mf)
    export_model("tiny-lora", None, tmp_path / "m.gguf", "gguf", "F32", register_as="tiny-lora-merged")
    llm = LLM.load("tiny-lora-merged", _engine_config())
    assert _greedy_ids(llm) == hf_greedy and llm.defaults["top_k"] == 7
    assert Store().get("tiny-lora-merged").adapters == []


# ---------------------------------------------------------------- errors


def test_errors_are_one_line(tiny_hf_dir, tmp_path):
    cases = [
        ({"adapter": str(tmp_path / "nope")}, AthanorError, "LoRA adapter .*nope: not a directory"),
        ({"base": "no-such-model"}, ModelNotFoundError, "model 'no-such-model' not found"),
        ({"base": str(tmp_path / "missing.gguf")}, AthanorError, "missing.gguf: no such file or directory"),
        ({"fmt": "gguf", "gguf_type": "Q4_K"}, AthanorError, "GGUF type 'Q4_K' .*choose one of F32, F16, BF16, Q8_0, .*Q4_K_M"),
        ({"fmt": "onnx"}, AthanorError, "export format 'onnx' is not supported"),
        ({"fmt": "gguf", "out": tmp_path / "model.bin"}, AthanorError, "should be a file path ending in .gguf"),
        ({"out": tiny_hf_dir}, AthanorError, "already exists and is not an empty directory"),
        ({"register_as": "bad name!"}, AthanorError, "invalid model name 'bad name!'"),
    ]
    for overrides, kind, message in cases:
        kwargs = {"base": str(tiny_hf_dir), "adapter": None, "out": tmp_path / "out", "fmt": "hf"} | overrides
        with pytest.raises(kind, match=message) as e:
            export_model(**kwargs)
        assert "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()  # every check runs before anything is written
