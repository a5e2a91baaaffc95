"""Ollama Go templates end to end: a Modelfile TEMPLATE in Go syntax, and /api/generate's `template`."""

from __future__ import annotations

from fastapi.testclient import TestClient

from athanor.engine.config import EngineConfig
from athanor.models.store import Store
from athanor.serve.app import create_app
from athanor.text.tokenizer import Tokenizer

CHATML_GO = ('{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}'
             '<|im_start|>assistant\n')


def _client(tmp_path, tiny_hf_dir):
    store = Store(tmp_path)
    # the Modelfile parser keeps a """ value exactly, newlines included, as Ollama's does (parser_test.go)
    (tmp_path / "Modelfile").write_text(f'FROM {tiny_hf_dir}\nTEMPLATE """{CHATML_GO}"""\n')
    store.create("tiny-go", tmp_path / "Modelfile")
    (tmp_path / "Plain").write_text(f"FROM {tiny_hf_dir}\n")
    store.create("tiny", tmp_path / "Plain")
    return TestClient(create_app(store=store, engine_config=EngineConfig(num_kvcache_blocks=64, block_size=8)))


def test_go_modelfile_template_and_generate_template(tmp_path, tiny_hf_dir):
    tok = Tokenizer.from_hf_dir(tiny_hf_dir)
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello world"}]
    jinja_ids = tok.encode_chat(msgs)
    opts = {"num_predict": 1, "temperature": 0}
    with _client(tmp_path, tiny_hf_dir) as client:
        go_chat = client.post("/api/chat", json={"model": "tiny-go", "messages": msgs, "stream": False,
                                                 "options": opts}).json()
        jinja_chat = client.post("/api/chat", json={"model": "tiny", "messages": msgs, "stream": False,
                                                    "options": opts}).json()
        assert go_chat["prompt_eval_count"] == jinja_chat["prompt_eval_count"] == len(jinja_ids)
        assert go_chat["message"]["content"] == jinja_chat["message"]["content"]  # same prompt, greedy

        legacy = "{{ if .System }}S:{{ .System }}\n{{ end }}U:{{ .Prompt }}\nA:"
        out = client.post("/api/generate", json={"model": "tiny", "prompt": "hello world", "system": "Be brief.",
                                                 "template": legacy, "stream": False, "options": opts}).json()
        assert out["prompt_eval_count"] == len(tok.encode("S:Be brief.\nU:hello world\nA:"))

        bad = client.post("/api/generate", json={"model": "tiny", "prompt": "x", "template": "{{ .Prompt "})
        assert bad.status_code == 400 and "Go template 1:1: unclosed action" in bad.json()["error"]
