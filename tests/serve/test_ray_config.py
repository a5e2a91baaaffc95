"""The Ray Serve pieces that need no cluster: routing hints, the shipped Serve config, scale options."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from athanor.serve.ray_app import DEFAULT_MAX_TOKENS, routing_hints

ROOT = Path(__file__).resolve().parents[2]


def body(**fields) -> bytes:
    return json.dumps(fields).encode()


def test_turns_of_one_conversation_share_a_key_and_others_do_not():
    turn1 = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    turn2 = turn1 + [{"role": "assistant", "content": "hello"}, {"role": "user", "content": "more"}]
    k1, _ = routing_hints("/v1/chat/completions", body(model="m", messages=turn1))
    k2, _ = routing_hints("/api/chat", body(model="m", messages=turn2))
    other, _ = routing_hints("/v1/chat/completions", body(model="m", messages=[{"role": "user", "content": "yo"}]))
    other_model, _ = routing_hints("/v1/chat/completions", body(model="n", messages=turn1))
    assert k1 == k2 and len({k1, other, other_model}) == 3


def test_prompt_requests_key_on_their_opening_and_cost_counts_max_tokens():
    long = "x" * 2000
    a, cost = routing_hints("/api/generate", body(model="m", prompt=long + "a", options={"num_predict": 10}))
    b, _ = routing_hints("/v1/completions", body(model="m", prompt=long + "b", max_tokens=5))
    assert a == b  # same first 512 characters: same prefix cache
    assert cost == len(body(model="m", prompt=long + "a", options={"num_predict": 10})) // 4 + 10
    _, default_cost = routing_hints("/v1/chat/completions", body(model="m", messages=[]))
    assert default_cost >= DEFAULT_MAX_TOKENS


@pytest.mark.parametrize("raw", [b"", b"not json", b"[1, 2]", b"\xff\xfe"])
def test_bodies_that_are_not_json_objects_get_no_key(raw):
    assert routing_hints("/v1/chat/completions", raw)[0] is None


def test_shipped_serve_config_is_valid_and_builds():
    pytest.importorskip("ray.serve")
    from ray.serve.schema import ServeDeploySchema

    from athanor.serve.ray_app import app_from_args

    config = yaml.safe_load((ROOT / "deploy" / "ray" / "serve_config.yaml").read_text())
    ServeDeploySchema.model_validate(config)
    app = config["applications"][0]
    assert app["import_path"] == "athanor.serve.ray_app:app_from_args"
    assert app_from_args(app["args"]) is not None  # a bound Serve application (deployment options checked)
    with pytest.raises(ValueError, match="unknown ray_app arguments: replicas"):
        app_from_args({"replicas": 2})


def test_scale_options_check_their_bounds():
    pytest.importorskip("ray.serve")
    from athanor.serve.ray_app import ScaleOptions

    opts = ScaleOptions(min_replicas=1, max_replicas=4).deployment_options()
    assert opts["autoscaling_config"]["max_replicas"] == 4 and "num_replicas" not in opts
    assert ScaleOptions(num_replicas=3).deployment_options()["num_replicas"] == 3
    with pytest.raises(ValueError, match="min"):
        ScaleOptions(min_replicas=3, max_replicas=2).deployment_options()
