"""HF export dtype and sharding (transformers loads the shards with the same logits), the LLaMA-Factory YAML form of
export, and `athanor chat CONFIG` loading base + adapter through our engine. Tiny random Qwen2 + a random LoRA."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from athanor.engine.config import EngineConfig
from athanor.engine.sampling_params import SamplingParams
from athanor.errors import AthanorError
from athanor.infer_config import chat_from_config, export_from_config, load_chat_config, load_llm
from athanor.runtime.llm import LLM
from athanor.train.config import ConfigError
from athanor.train.export import export_model, parse_size

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

INPUT_IDS = torch.tensor([[1, 5, 7, 9, 100, 200, 17, 42, 3, 250]])
GREEDY = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
MESSAGES = [{"role": "user", "content": "The capital of France is"}]


def _logits(path: Path) -> torch.Tensor:
    model = transformers.AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    with torch.no_grad():
        return model(INPUT_IDS).logits[0]


def _greedy(llm: LLM) -> list[int]:
    return llm.generate_ids([llm.chat_prompt(MESSAGES)], GREEDY)[0].token_ids


@pytest.fixture(scope="module")
def adapter(tiny_hf_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("adapter") / "adapter"
    model = transformers.AutoModelForCausalLM.from_pretrained(str(tiny_hf_dir))
    pm = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"]))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_" in name:
                p.normal_(std=0.2)
    pm.save_pretrained(str(out), save_embedding_layers=False)
    return out


@pytest.fixture(scope="module")
def fp32_export(tiny_hf_dir, adapter, tmp_path_factory) -> Path:
    return export_model(str(tiny_hf_dir), str(adapter), tmp_path_factory.mktemp("e") / "fp32", "hf")


def test_sharded_export_loads_with_identical_logits(tiny_hf_dir, adapter, fp32_export, tmp_path):
    out = export_model(str(tiny_hf_dir), str(adapter), tmp_path / "sharded", "hf", max_shard_size="60KB")
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(p.name for p in out.glob("model-*.safetensors"))
    assert len(shards) >= 3 and not (out / "model.safetensors").exists()
    assert sorted(set(index["weight_map"].values())) == shards
    from safetensors.torch import load_file

    whole = load_file(str(fp32_export / "model.safetensors"))
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in whole.values())
    assert set(index["weight_map"]) == set(whole)
    torch.testing.assert_close(_logits(out), _logits(fp32_export), atol=0, rtol=0)


@pytest.mark.parametrize(("dtype", "torch_dtype", "tol"), [("fp16", torch.float16, 2e-3), ("bf16", torch.bfloat16, 2e-2)])
def test_half_precision_exports(tiny_hf_dir, adapter, fp32_export, tmp_path, dtype, torch_dtype, tol):
    from safetensors import safe_open

    out = export_model(str(tiny_hf_dir), str(adapter), tmp_path / dtype, "hf", dtype=dtype, max_shard_size=10**5)
    config = json.loads((out / "config.json").read_text())
    assert config["torch_dtype"] == {"fp16": "float16", "bf16": "bfloat16"}[dtype]
    for shard in out.glob("*.safetensors"):
        with safe_open(str(shard), "pt") as f:
            assert all(f.get_tensor(k).dtype == torch_dtype for k in f.keys())  # noqa: SIM118 (safe_open has no __iter__)
    want = _logits(fp32_export)
    diff = (_logits(out) - want).abs().max() / want.abs().max()
    assert 0 < diff < tol, diff  # rounded weights: close, not equal


def test_sizes_and_bad_dtype(tmp_path):
    assert parse_size("2GB") == 2 * 10**9 and parse_size("1.5MiB") == 1572864 and parse_size(4096) == 4096
    with pytest.raises(AthanorError, match="shard size 'lots' is not a size"):
        parse_size("lots")
    with pytest.raises(AthanorError, match="export dtype 'int4' is not supported"):
        export_model("smollm2", None, str(tmp_path / "x"), "hf", dtype="int4")


def _yaml(path: Path, **keys) -> Path:
    path.write_text(yaml.safe_dump(keys))
    return path


def test_yaml_export_registers_and_matches_the_flag_form(tiny_hf_dir, adapter, fp32_export, tmp_path):
    cfg = _yaml(tmp_path / "export.yaml", model_name_or_path=str(tiny_hf_dir), adapter_name_or_path=str(adapter),
                template=None, finetuning_type="lora", export_dir=str(tmp_path / "out"), export_size=0.00005,
                export_legacy_format=False, export_device="cpu", name="tiny-yaml")
    lines = []
    out = export_from_config(cfg, echo=lines.append)
    assert len(list(out.glob("model-*.safetensors"))) >= 2  # export_size is GB per shard
    torch.testing.assert_close(_logits(out), _logits(fp32_export), atol=0, rtol=0)
    assert lines == [f"wrote {out}; run it with: athanor run tiny-yaml"]
    engine = EngineConfig(weight_dtype="float32", num_kvcache_blocks=64)
    assert _greedy(LLM.load("tiny-yaml", engine)) == _greedy(LLM.load(str(fp32_export), engine))
    gguf = export_from_config(cfg, ["export_format=gguf", "gguf_type=F32", "name=null"])
    assert gguf.name == f"{tiny_hf_dir.name}-F32.gguf" and gguf.parent == (tmp_path / "out").resolve()


def test_yaml_export_problems_are_listed_together(tmp_path):
    cfg = _yaml(tmp_path / "bad.yaml", model_name_or_path="smollm2", export_dri="x", export_legacy_format=True,
                export_dtype="fp8")
    with pytest.raises(ConfigError) as info:
        export_from_config(cfg)
    problems = info.value.problems
    assert any("unknown key 'export_dri'; did you mean 'export_dir'?" in p for p in problems)
    assert any(p.startswith("export_dir: Field required") for p in problems)
    assert any(p.startswith("export_dtype:") for p in problems)
    assert any(p.startswith("export_legacy_format: true (pytorch .bin) is not supported") for p in problems)
    assert len(problems) == 4 and all("\n" not in p for p in problems)


def test_chat_config_from_a_training_yaml_uses_its_adapter(tiny_hf_dir, adapter, fp32_export, tmp_path, capsys):
    train_yaml = _yaml(tmp_path / "sft.yaml", model_name_or_path=str(tiny_hf_dir), stage="sft", dataset="d.jsonl",
                       lora_rank=4, output_dir=str(adapter), learning_rate=1e-4)
    engine = EngineConfig(weight_dtype="float32", num_kvcache_blocks=64)
    llm = load_llm(load_chat_config(train_yaml), engine)
    merged = LLM.load(str(fp32_export), engine)
    assert _greedy(llm) == _greedy(merged)
    assert _greedy(LLM.load(str(tiny_hf_dir), engine)) != _greedy(merged)  # the adapter changes the output
    chat_from_config(train_yaml, ["max_steps=3"], prompt="hello")  # one answer through chat_cli, then return
    assert capsys.readouterr().out.strip()
    missing = _yaml(tmp_path / "none.yaml", model_name_or_path=str(tiny_hf_dir), output_dir=str(tmp_path / "nope"))
    with pytest.raises(AthanorError, match="holds no trained adapter or model yet"):
        load_llm(load_chat_config(missing))


def test_cli_routes_yaml_and_flag_forms(tiny_hf_dir, adapter, tmp_path):
    import typer
    from typer.testing import CliRunner

    from athanor.cli_ext import register

    app = typer.Typer()
    register(app)
    runner = CliRunner()
    cfg = _yaml(tmp_path / "e.yaml", model_name_or_path=str(tiny_hf_dir), adapter_name_or_path=str(adapter),
                export_dir=str(tmp_path / "yaml-out"))
    result = runner.invoke(app, ["export", str(cfg), "export_dtype=bf16"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "yaml-out" / "config.json").read_text())["torch_dtype"] == "bfloat16"
    result = runner.invoke(app, ["export", str(tiny_hf_dir), "--adapter", str(adapter), "--out",
                                 str(tmp_path / "flag-out"), "--max-shard-size", "60KB"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "flag-out" / "model.safetensors.index.json").is_file()
    result = runner.invoke(app, ["export", str(tiny_hf_dir)])
    assert isinstance(result.exception, AthanorError) and "--out is required" in str(result.exception)


MARKED = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}[assistant] "


def test_yaml_template_is_carried_by_hf_and_gguf_exports(tiny_hf_dir, adapter, tmp_path):
    from athanor.models.loader import load_checkpoint
    from athanor.text.tokenizer import CHATML_TEMPLATE

    cfg = _yaml(tmp_path / "t.yaml", model_name_or_path=str(tiny_hf_dir), adapter_name_or_path=str(adapter),
                template=MARKED, export_dir=str(tmp_path / "hf"))
    out = export_from_config(cfg, echo=lambda _: None)
    assert json.loads((out / "tokenizer_config.json").read_text())["chat_template"] == MARKED
    llm = LLM.load(str(out), EngineConfig(weight_dtype="float32", num_kvcache_blocks=64))
    assert llm.tokenizer.apply_chat_template(MESSAGES) == "[user] The capital of France is\n[assistant] "
    gguf = export_from_config(cfg, ["template=chatml", "export_format=gguf", "gguf_type=F32",
                                    f"export_dir={tmp_path / 'g.gguf'}"], echo=lambda _: None)
    assert load_checkpoint(gguf).tokenizer.chat_template == CHATML_TEMPLATE
    assert json.loads((tiny_hf_dir / "tokenizer_config.json").read_text())["chat_template"] not in (MARKED,
                                                                                                  CHATML_TEMPLATE)
    with pytest.raises(AthanorError, match="unknown template llama9; known: .*llama3"):
        export_from_config(cfg, ["template=llama9", f"export_dir={tmp_path / 'bad'}"])


def test_cli_flag_template(tiny_hf_dir, tmp_path):
    import typer
    from typer.testing import CliRunner

    from athanor.cli_ext import register
    from athanor.text.tokenizer import CHATML_TEMPLATE

    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, ["export", str(tiny_hf_dir), "--out", str(tmp_path / "o"), "--template", "chatml"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "o" / "tokenizer_config.json").read_text())["chat_template"] == CHATML_TEMPLATE


@pytest.mark.parametrize(("bits", "qtype"), [(8, "Q8_0"), (4, "Q4_1")])
def test_export_quantization_bit_writes_a_quantized_gguf(tiny_hf_dir, adapter, tmp_path, bits, qtype):
    import gguf

    cfg = _yaml(tmp_path / "export.yaml", model_name_or_path=str(tiny_hf_dir), adapter_name_or_path=str(adapter),
                export_dir=str(tmp_path / "out"), export_quantization_bit=bits,
                export_quantization_dataset="data/c4_demo.jsonl", export_size=5, export_device="cpu")
    lines = []
    out = export_from_config(cfg, echo=lines.append)
    assert out.suffix == ".gguf" and lines[0].startswith(f"export_quantization_bit: {bits} -> a GGUF file with {qtype}")
    reader = gguf.GGUFReader(str(out))
    assert int(reader.fields["general.file_type"].parts[-1][0]) == gguf.LlamaFileType[f"MOSTLY_{qtype}"].value
    types = {t.tensor_type.name for t in reader.tensors}
    assert qtype in types, types


def test_export_quantization_bit_other_values_are_refused(tiny_hf_dir, tmp_path):
    cfg = _yaml(tmp_path / "export.yaml", model_name_or_path=str(tiny_hf_dir), export_dir=str(tmp_path / "out"),
                export_quantization_bit=3)
    with pytest.raises(ConfigError) as info:
        export_from_config(cfg)
    want = "export_quantization_bit: 3 is not supported; athanor writes 4-bit (GGUF Q4_1) or 8-bit (GGUF Q8_0) exports"
    assert info.value.problems == [want]
