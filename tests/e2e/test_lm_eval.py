"""lm-evaluation-harness against a real `athanor serve`: its `local-completions` backend (echo + prompt logprobs on
/v1/completions, the remote tokenizer through /tokenizer_info and /tokenize without a model name) on a small
multiple-choice task, compared with lm-eval's own `hf` backend on the same weights (an HF dir converted from the
built-in GGUF by transformers). The per-choice log-likelihoods and the accuracy must agree."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from athanor.models.store import Store
from athanor.serve.app import create_app
from tests.e2e.conftest import small_engine_config, start_server

pytestmark = pytest.mark.slow
TASK_DIR = Path(__file__).parent / "data" / "lmeval_capitals"


@pytest.fixture(scope="module")
def smol_server(tmp_path_factory):
    """A server whose store holds only the built-in model, so requests without a model name mean it."""
    app = create_app(store=Store(tmp_path_factory.mktemp("lmeval_home")), engine_config=small_engine_config())
    with start_server(app) as s:
        yield s


@pytest.fixture(scope="module")
def smol_hf_dir(tmp_path_factory, smollm2_path, smollm2_transformers):
    transformers = pytest.importorskip("transformers")

    out = tmp_path_factory.mktemp("smollm2_hf")
    kw = {"gguf_file": smollm2_path.name}
    model = smollm2_transformers
    # transformers marks GGUF-loaded models as quantized and will not save_pretrained them: write the dequantized
    # float tensors and a config without the quantization entry ourselves
    from safetensors.torch import save_file

    config = model.config.to_dict()
    config.pop("quantization_config", None)
    (out / "config.json").write_text(__import__("json").dumps(config))
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        tensors.pop("lm_head.weight", None)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    transformers.AutoTokenizer.from_pretrained(str(smollm2_path.parent), **kw).save_pretrained(out)
    return out


def test_tokenizer_routes_need_no_model_name(smol_server):
    info = httpx.get(f"{smol_server.url}/tokenizer_info", timeout=60).json()
    assert info["eos_token"] == "<|im_end|>" and "im_start" in info["chat_template"]
    tok = httpx.post(f"{smol_server.url}/tokenize", json={"prompt": info["eos_token"], "add_special_tokens": False})
    assert tok.status_code == 200 and len(tok.json()["tokens"]) == 1
    back = httpx.post(f"{smol_server.url}/detokenize", json={"tokens": tok.json()["tokens"]}).json()
    assert back["prompt"] == "<|im_end|>"


def test_echo_returns_prompt_logprobs_that_match_the_forward(smol_server):
    import torch

    body = {"model": "smollm2", "prompt": "The capital of France is Paris", "echo": True, "logprobs": 1,
            "max_tokens": 1, "temperature": 0}
    r = httpx.post(f"{smol_server.url}/v1/completions", json=body, timeout=60).json()
    choice = r["choices"][0]
    lp = choice["logprobs"]
    ids = httpx.post(f"{smol_server.url}/tokenize", json={"prompt": body["prompt"]}).json()["tokens"]
    assert choice["text"].startswith(body["prompt"]) and len(lp["tokens"]) == len(ids) + 1
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    assert "".join(lp["tokens"]) == choice["text"]
    # the reference: the same model's full-prompt logits (the engine's own forward), log-softmaxed
    llm = smol_server.manager.models["smollm2:latest"].llm
    from tests.nn.test_parity_tiny import full_logits

    ref = torch.log_softmax(full_logits(llm.engine.runner.model, ids), -1)
    want = [ref[t - 1, ids[t]].item() for t in range(1, len(ids))]
    assert lp["token_logprobs"][1:len(ids)] == pytest.approx(want, abs=1e-3)
    assert lp["token_logprobs"][-1] <= 0 and all(len(t) == 1 for t in lp["top_logprobs"][1:])


def _evaluate(model: str, model_args: str, tmp_path: Path, monkeypatch) -> dict:
    import lm_eval
    from lm_eval.tasks import TaskManager

    work = tmp_path / f"task-{model}"
    shutil.copytree(TASK_DIR, work)
    monkeypatch.chdir(work)  # the task's data_files is relative, as a user's local task YAML usually is
    out = lm_eval.simple_evaluate(model=model, model_args=model_args, tasks=["athanor_capitals"],
                                  task_manager=TaskManager(include_path=str(work)), log_samples=True,
                                  batch_size=1, device="cpu")
    samples = out["samples"]["athanor_capitals"]
    lls = {s["doc_id"]: [r[0][0] for r in s["resps"]] for s in samples}
    return {"acc": out["results"]["athanor_capitals"]["acc,none"], "lls": lls}


def test_lm_eval_local_completions_agrees_with_hf(smol_server, smol_hf_dir, tmp_path, monkeypatch):
    for var, value in {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
                       "HF_DATASETS_CACHE": str(tmp_path / "hf" / "datasets"), "OPENAI_API_KEY": "unused"}.items():
        monkeypatch.setenv(var, value)
    # lm-eval probes /tokenizer_info with a 5 s timeout: load the model first, as a warm server would have it
    httpx.post(f"{smol_server.url}/api/generate", json={"model": "smollm2"}, timeout=120).raise_for_status()
    ours = _evaluate("local-completions", f"model=smollm2,base_url={smol_server.url}/v1/completions,"
                     "num_concurrent=1,max_retries=1,tokenizer_backend=auto", tmp_path, monkeypatch)
    hf = _evaluate("hf", f"pretrained={smol_hf_dir},dtype=float32", tmp_path, monkeypatch)
    print(f"accuracy: local-completions {ours['acc']:.3f}, hf {hf['acc']:.3f}")
    assert ours["acc"] == hf["acc"]
    assert ours["lls"].keys() == hf["lls"].keys() and len(ours["lls"]) == 22
    for doc in ours["lls"]:
        assert ours["lls"][doc] == pytest.approx(hf["lls"][doc], abs=2e-2), doc
