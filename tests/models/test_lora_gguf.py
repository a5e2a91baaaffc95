"""A Modelfile ADAPTER that is a llama.cpp LoRA .gguf: written here the way llama.cpp's convert_lora_to_gguf.py
writes one (the `gguf` package's writer and tensor-name map, `.lora_a` / `.lora_b`, q/k rows of B in llama.cpp's
rope order, adapter.lora.alpha) from a real PEFT adapter, then merged at load and compared with peft's own
merge_and_unload: the weights, and the logits of the model created through the store, `athanor create` and
/api/create against the peft-merged checkpoint."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from athanor.errors import AthanorError
from tests.conftest import write_tiny_hf_dir

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")

ALPHA, RANK = 16.0, 4
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _llama_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf's LlamaModel.permute, which convert_lora_to_gguf applies to B (the output rows)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def peft_to_gguf(adapter_dir: Path, out: Path, config, dtype=np.float32) -> Path:
    """A PEFT adapter -> a llama.cpp LoRA GGUF, as convert_lora_to_gguf.py lays it out."""
    from safetensors.torch import load_file

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    writer = gguf.GGUFWriter(str(out), "llama")
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, ALPHA)
    for key, value in sorted(load_file(str(adapter_dir / "adapter_model.safetensors")).items()):
        hf = key.removeprefix("base_model.model.").replace(".lora_A.weight", ".weight").replace(".lora_B.weight",
                                                                                               ".weight")
        name = names.get_name(hf, try_suffixes=(".weight",))
        data = value.float().numpy()
        if ".lora_B." in key and (".q_proj." in key or ".k_proj." in key):
            heads = config.num_attention_heads if ".q_proj." in key else config.num_key_value_heads
            data = _llama_permute(data, heads)
        writer.add_tensor(f"{name}.lora_{'a' if '.lora_A.' in key else 'b'}", np.ascontiguousarray(data.astype(dtype)))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """(base HF dir, peft-merged HF dir, lora .gguf, its f16 twin, HF config)."""
    root = tmp_path_factory.mktemp("lora_gguf")
    base_dir = write_tiny_hf_dir(root / "base", arch="llama", seed=3)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(base_dir), torch_dtype=torch.float32)
    config = model.config
    pm = peft.get_peft_model(model, peft.LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=TARGETS))
    torch.manual_seed(7)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_" in name:
                p.normal_(std=0.1)
    pm.save_pretrained(str(root / "peft"))
    merged_dir = root / "merged"
    pm.merge_and_unload().save_pretrained(str(merged_dir))
    for f in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copy(base_dir / f, merged_dir / f)
    work = root / "work"
    work.mkdir()
    lora = peft_to_gguf(root / "peft", work / "lora.gguf", config)
    lora16 = peft_to_gguf(root / "peft", work / "lora-f16.gguf", config, np.float16)
    return base_dir, merged_dir, lora, lora16, config


def test_merged_weights_equal_peft(made):
    from athanor.models.loader import load_checkpoint
    from athanor.models.lora import merge_adapters

    base_dir, merged_dir, lora, _, _ = made
    ckpt = load_checkpoint(base_dir)
    ours = merge_adapters(ckpt.tensors, [str(lora)], ckpt.config)
    ref = load_checkpoint(merged_dir).tensors
    assert ours.keys() == ref.keys()
    changed = 0
    for k, want in ref.items():
        torch.testing.assert_close(ours[k], want, atol=1e-5, rtol=0, msg=k)
        changed += not torch.equal(ckpt.tensors[k], want)
    assert changed == 2 * len(TARGETS)  # every adapted matrix of both layers moved


def _logits(manifest) -> torch.Tensor:
    from athanor.engine.config import EngineConfig
    from athanor.runtime.llm import LLM

    llm = LLM.from_manifest(manifest, EngineConfig(kv_cache_bytes=8 * 2**20, max_num_seqs=4), {})
    model = llm.engine.runner.model
    ids = llm.tokenizer.encode("The capital of France is Paris.")
    with torch.inference_mode():
        return model.lm_head(model.hidden_states(torch.tensor(ids))).float()


def test_modelfile_adapter_logits_equal_the_merged_reference(made, tmp_path):
    from athanor.models.store import Store

    base_dir, merged_dir, lora, _, _ = made
    store = Store(tmp_path / "home")
    mf = lora.parent / "Modelfile"
    mf.write_text(f"FROM {base_dir}\nADAPTER ./lora.gguf\n")
    store.create("with-lora", mf)
    (lora.parent / "Modelfile.ref").write_text(f"FROM {merged_dir}\n")
    store.create("reference", lora.parent / "Modelfile.ref")
    (lora.parent / "Modelfile.f16").write_text(f"FROM {base_dir}\nADAPTER ./lora-f16.gguf\n")
    store.create("with-lora-f16", lora.parent / "Modelfile.f16")
    (lora.parent / "Modelfile.base").write_text(f"FROM {base_dir}\n")
    store.create("base", lora.parent / "Modelfile.base")
    assert store.get("with-lora").adapters == [str(lora)]
    ours, ref, base = (_logits(store.get(n)) for n in ("with-lora", "reference", "base"))
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0)
    assert (ours - base).abs().max() > 1e-2  # the adapter really changes the model
    half = _logits(store.get("with-lora-f16"))  # f16 A/B: llama.cpp's --outtype f16
    assert (half - ref).abs().max() < 1e-2


def test_athanor_create_and_api_create(made, tmp_path):
    from fastapi.testclient import TestClient

    from athanor.models.store import Store
    from athanor.serve.app import create_app

    base_dir, _, lora, _, _ = made
    home = tmp_path / "home"
    mf = lora.parent / "Modelfile.cli"
    mf.write_text(f"FROM {base_dir}\nADAPTER ./lora.gguf\n")
    cli = str(Path(sys.executable).with_name("athanor"))
    proc = subprocess.run([cli, "create", "cli-lora", "-f", str(mf)], check=False, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "ATHANOR_HOME": str(home)})
    assert proc.returncode == 0, proc.stderr
    assert Store(home).get("cli-lora").adapters == [str(lora)]
    client = TestClient(create_app(store=Store(home)))
    r = client.post("/api/create", json={"model": "api-lora", "stream": False,
                                          "modelfile": f"FROM {base_dir}\nADAPTER {lora}\n"})
    assert r.status_code == 200, r.text
    assert Store(home).get("api-lora").adapters == [str(lora)]
    weights = next(base_dir.glob("*.safetensors"))  # not GGUF at all
    r = client.post("/api/create", json={"model": "bad", "stream": False,
                                          "modelfile": f"FROM {base_dir}\nADAPTER {weights}\n"})
    assert r.status_code == 400 and "not a model this server can use" in r.json()["error"]  # create_guard.py


def test_hostile_adapters(made, tmp_path):
    from athanor.models.loader import load_checkpoint
    from athanor.models.lora import check_adapter, merge_adapters

    base_dir, _, lora, _, _ = made
    model_gguf = tmp_path / "model.gguf"  # a GGUF model, not an adapter
    w = gguf.GGUFWriter(str(model_gguf), "llama")
    w.add_tensor("token_embd.weight", np.zeros((4, 4), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(AthanorError, match="not a llama.cpp LoRA adapter"):
        check_adapter(model_gguf)
    ckpt = load_checkpoint(base_dir)
    small = dict(ckpt.tensors)
    small["model.layers.0.self_attn.q_proj.weight"] = small["model.layers.0.self_attn.q_proj.weight"][:, :32]
    with pytest.raises(AthanorError, match="do not fit the base weight"):
        merge_adapters(small, [str(lora)], ckpt.config)
    with pytest.raises(AthanorError, match="made for a llama model, but the base model is qwen2"):
        merge_adapters(ckpt.tensors, [str(lora)], dataclasses.replace(ckpt.config, arch="qwen2"))


def test_ollama_client_create_with_uploaded_adapter(made, tmp_path):
    """`ollama` client: create_blob uploads the LoRA .gguf, create(adapters={name: digest}) makes the model;
    its logits equal the peft-merged reference. A blob whose bytes do not match its digest is refused."""
    import hashlib

    import httpx
    import ollama

    from athanor.models.store import Store
    from athanor.serve.app import create_app
    from tests.e2e.conftest import small_engine_config, start_server

    base_dir, merged_dir, lora, _, _ = made
    store = Store(tmp_path / "home")
    with start_server(create_app(store=store, engine_config=small_engine_config())) as server:
        client = ollama.Client(host=server.url, timeout=120)
        digest = client.create_blob(lora)
        assert httpx.head(f"{server.url}/api/blobs/{digest}").status_code == 200
        client.create(model="blob-lora", from_=str(base_dir), adapters={"lora.gguf": digest}, stream=False)
        client.create(model="reference", from_=str(merged_dir), stream=False)
        from athanor.models.gguf_export import write_gguf
        from athanor.models.loader import load_checkpoint

        ckpt = load_checkpoint(base_dir)  # the base as an F32 .gguf too: FROM an uploaded file (`files`)
        base_gguf = write_gguf(ckpt.config, ckpt.tensors, base_dir, tmp_path / "base.gguf")
        client.create(model="gguf-lora", files={"base.gguf": client.create_blob(base_gguf)},
                      adapters={"lora.gguf": digest}, stream=False)
        missing = "sha256:" + "0" * 64
        assert httpx.head(f"{server.url}/api/blobs/{missing}").status_code == 404
        with pytest.raises(ollama.ResponseError) as e:
            client.create(model="nope", from_=str(base_dir), adapters={"x.gguf": missing}, stream=False)
        assert e.value.status_code == 404
        wrong = "sha256:" + hashlib.sha256(b"other bytes").hexdigest()
        r = httpx.post(f"{server.url}/api/blobs/{wrong}", content=b"these bytes")
        assert r.status_code == 400 and "digest mismatch" in r.json()["error"]
        assert httpx.head(f"{server.url}/api/blobs/{wrong}").status_code == 404
        r = httpx.post(f"{server.url}/api/blobs/sha256:../../etc", content=b"x")
        assert r.status_code in (400, 404)
    adapter = store.get("blob-lora").adapters[0]
    assert adapter.endswith(digest.replace(":", "-"))
    ref = _logits(store.get("reference"))
    torch.testing.assert_close(_logits(store.get("blob-lora")), ref, atol=1e-4, rtol=0)
    torch.testing.assert_close(_logits(store.get("gguf-lora")), ref, atol=1e-4, rtol=0)  # GGUF base + GGUF LoRA
