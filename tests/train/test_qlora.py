"""QLoRA: refused with one clear line without CUDA; on a CUDA machine with bitsandbytes, a 4-bit run trains and
saves an ordinary LoRA adapter (skipped cleanly elsewhere)."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from athanor.errors import AthanorError
from athanor.train.config import TrainConfig, load_config
from athanor.train.qlora import has_bitsandbytes, load_quantized


def test_loading_quantized_without_cuda_says_so(monkeypatch, tiny_hf_dir):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = TrainConfig(model_name_or_path=str(tiny_hf_dir), dataset=["x.jsonl"], quantization_bit=4)
    with pytest.raises(AthanorError, match="^quantization_bit: 4-bit QLoRA needs a CUDA GPU"):
        load_quantized(cfg, tiny_hf_dir, None)


@pytest.mark.skipif(not torch.cuda.is_available() or not has_bitsandbytes(), reason="QLoRA needs CUDA + bitsandbytes")
@pytest.mark.parametrize("bits", [4, 8])
def test_qlora_run_on_cuda(tmp_path, tiny_hf_dir, bits):
    from athanor.train.sft import load_model, run_sft

    (tmp_path / "d.jsonl").write_text(json.dumps({"instruction": "capital of France?", "output": "Paris."}))
    (tmp_path / "q.yaml").write_text(yaml.safe_dump({
        "model_name_or_path": str(tiny_hf_dir), "dataset": "d.jsonl", "quantization_bit": bits,
        "lora_target": "q_proj,v_proj", "output_dir": str(tmp_path / "out"), "max_steps": 3, "logging_steps": 1,
        "learning_rate": 1e-3, "bf16": torch.cuda.is_bf16_supported()}))
    cfg = load_config(tmp_path / "q.yaml", has_cuda=True)
    model = load_model(cfg, tiny_hf_dir, None)
    kinds = {type(m).__name__ for m in model.modules()}
    assert ("Linear4bit" if bits == 4 else "Linear8bitLt") in kinds
    result = run_sft(cfg)
    assert (result.output_dir / "adapter_model.safetensors").is_file()
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in result.log_history if "loss" in r)
