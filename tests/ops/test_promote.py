"""Promotion on a running server: "prod" answers from model A; promoting B (not worse) moves "prod" to B for the
next request with no restart; promoting a model that is worse beyond noise is refused and "prod" stays put.

The models are tiny random Hugging Face dirs (different seeds: different greedy replies). The eval that B must
not lose is built from B's own replies, so C (other weights) fails it item by item: a real regression."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from athanor.engine.config import EngineConfig
from athanor.errors import AthanorError
from athanor.models.store import Store
from athanor.ops.evals import run_eval
from athanor.ops.promote import PromotionRefused, promote, promotions
from athanor.serve.app import create_app
from tests.conftest import write_tiny_hf_dir

PROMPTS = ["hello world", "how are you?", "The capital of France", "12345", "emoji too", "Paris is", "world, how",
           "are you"]
MAX_TOKENS = 6


def _models(tmp_path) -> Store:
    store = Store()  # ATHANOR_HOME: the one run_eval and the server use
    for name, seed in (("a", 0), ("b", 1), ("c", 2)):
        path = write_tiny_hf_dir(tmp_path / f"tiny-{name}", seed=seed)
        (tmp_path / f"Modelfile.{name}").write_text(f"FROM {path}\n")
        store.create(name, tmp_path / f"Modelfile.{name}")
    return store


def _data(path, ideals: list[str]):
    path.write_text("".join(json.dumps({"input": [{"role": "user", "content": p}], "ideal": i}) + "\n"
                            for p, i in zip(PROMPTS, ideals)))
    return path


def test_promote_moves_the_alias_on_a_running_server_and_refuses_a_regression(tmp_path):
    store = _models(tmp_path)
    store.set_alias("prod", "a")
    app = create_app(store=store, engine_config=EngineConfig(num_kvcache_blocks=64, block_size=8))
    with TestClient(app) as client:
        def ask(model: str) -> str:
            r = client.post("/v1/chat/completions", json={
                "model": model, "messages": [{"role": "user", "content": "hello world"}],
                "max_tokens": MAX_TOKENS, "temperature": 0})
            assert r.status_code == 200, r.text
            return r.json()["choices"][0]["message"]["content"]

        out_a, out_b = ask("a"), ask("b")
        assert out_a != out_b
        assert ask("prod") == out_a

        # nobody answers these: B is not worse (0 vs 0), so prod moves to B
        nobody = _data(tmp_path / "nobody.jsonl", ["zzz never said"] * len(PROMPTS))
        record = promote("b", over="prod", data=nobody, max_tokens=MAX_TOKENS)
        assert record["status"] == "promoted" and record["alias"] == "prod:latest"
        assert record["previous_target"] == "a:latest" and record["eval"]["n"] == len(PROMPTS)
        assert ask("prod") == out_b  # the next request, same server
        assert "a:latest" in app.state.manager.models  # the old model stays loaded until evicted

        # B's own replies are the answers: C (other weights) gets them wrong -> refused, prod unchanged
        b_run = run_eval("b", nobody, max_tokens=MAX_TOKENS)
        answers = _data(tmp_path / "b_answers.jsonl", [it["output"] for it in b_run["items"]])
        with pytest.raises(PromotionRefused) as refused:
            promote("c", over="prod", data=answers, max_tokens=MAX_TOKENS)
        rec = refused.value.record
        assert rec["eval"]["old_accuracy"] == 1.0 and rec["eval"]["new_accuracy"] < 0.5
        assert "refused" in str(refused.value) and "p=" in str(refused.value)
        assert store.aliases()["prod:latest"] == "b:latest"
        assert ask("prod") == out_b

        # the CLI: exit 1, one line with the numbers
        r = CliRunner().invoke(_cli(), ["promote", "c", "--over", "prod", "--eval", str(answers),
                                        "--max-tokens", str(MAX_TOKENS)])
        assert r.exit_code == 1 and "refused: c is worse than b" in r.output
        assert store.aliases()["prod:latest"] == "b:latest"

        # and back to A (not worse on the items nobody answers), from the CLI
        r = CliRunner().invoke(_cli(), ["promote", "a", "--over", "prod", "--eval", str(nobody),
                                        "--max-tokens", str(MAX_TOKENS)])
        assert r.exit_code == 0 and r.output.startswith("promoted: prod -> a (was b); accuracy 0.0% vs 0.0%"), r.output
        assert ask("prod") == out_a

    assert [p["status"] for p in promotions(store)] == ["promoted", "refused", "refused", "promoted"]
    from athanor.ops.lineage import model_lineage

    info = model_lineage("b", store)
    assert info["aliases"] == [] and model_lineage("a", store)["aliases"] == ["prod"]
    assert {p["status"] for p in info["promotions"]} == {"promoted", "refused"}
    runs = {r["run_id"] for r in info["evals"]}
    assert record["eval"]["new_run"] in runs and rec["eval"]["old_run"] in runs


def _cli():
    from athanor.cli import app

    return app


def test_aliases_in_the_store(tmp_path):
    store = _models(tmp_path)
    assert store.set_alias("prod", "a") is None
    assert store.get("prod").name == "a:latest"
    store.set_alias("live", "prod")  # an alias of an alias points at the model itself
    assert store.aliases()["live:latest"] == "a:latest"
    assert store.set_alias("prod", "b") == "a:latest" and store.get("prod").name == "b:latest"
    listed = CliRunner().invoke(_cli(), ["list"]).output.splitlines()
    assert ["prod:latest", "->", "b"] in [line.split() for line in listed]  # `athanor list` shows the alias
    with pytest.raises(AthanorError, match="is a model"):
        store.set_alias("a", "b")
    with pytest.raises(AthanorError):
        store.set_alias("prod", "nope")
    store.remove("prod")
    assert "prod:latest" not in store.aliases() and store.get("b").name == "b:latest"
    with pytest.raises(AthanorError, match="same model"):
        promote("a", over="live", data=tmp_path / "x.jsonl")
