"""`athanor serve --replicas 2` on Ray Serve (serve/ray_app.py): two CPU engine replicas behind one endpoint on
127.0.0.1, driven by the real `openai` and `ollama` clients. Both replicas serve; a conversation sticks to one;
killing a replica under load loses no request that had not started streaming; the other keeps serving.
About a minute on 2 cores (Ray start ~20 s); skipped where ray[serve] is not installed."""

from __future__ import annotations

import concurrent.futures as cf
import json
import time

import httpx
import pytest

from athanor.engine.config import EngineConfig
from tests.e2e.conftest import make_store

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")
openai = pytest.importorskip("openai")
KEY = "sk-ray-test"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, tiny_hf_dir):
    from athanor.serve.ray_app import ReplicaOptions, ScaleOptions, build_app, free_port

    home = tmp_path_factory.mktemp("ray_home")
    make_store(home, tiny_hf_dir)
    ray.init(num_cpus=4, include_dashboard=False, _temp_dir=str(tmp_path_factory.mktemp("ray")),
             log_to_driver=False)
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        engine_config = EngineConfig(kv_cache_bytes=64 * 2**20, max_num_seqs=32)
        options = ReplicaOptions(store_home=str(home), api_key=KEY, app_kwargs={"engine_config": engine_config})
        serve.run(build_app(options, ScaleOptions(num_replicas=2, num_cpus_per_replica=1)))
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


def client(url: str):
    return openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=120)


def chat(c, messages, max_tokens=4, **extra):
    """(reply text, replica that answered) through the real SDK."""
    raw = c.chat.completions.with_raw_response.create(model="tiny", messages=messages, max_tokens=max_tokens,
                                                      temperature=0, extra_body=extra or None)
    return raw.parse().choices[0].message.content, raw.headers["x-athanor-replica"]


def routed(url: str) -> dict[str, int]:
    """Requests in flight per replica, from the gateway's router."""
    status = httpx.get(f"{url}/-/routing", timeout=10).json()
    return {rid: row["requests"] for rid, row in status["replicas"].items()}


def conversation(i: int, turns: int) -> list[dict]:
    msgs = [{"role": "system", "content": f"you are helper number {i}"}, {"role": "user", "content": f"hello {i}"}]
    for t in range(turns - 1):
        msgs += [{"role": "assistant", "content": f"reply {t}"}, {"role": "user", "content": f"more {t} please"}]
    return msgs


def test_same_routes_auth_and_errors_as_one_process(cluster):
    assert httpx.get(f"{cluster}/v1/models").status_code == 401  # the replica's own auth
    bad = httpx.post(f"{cluster}/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                     json={"model": "nope", "messages": [{"role": "user", "content": "x"}]}, timeout=60)
    assert bad.status_code == 404 and bad.json()["error"]["code"] == "model_not_found"
    bad = httpx.post(f"{cluster}/api/chat", headers={"Authorization": f"Bearer {KEY}"},
                     json={"model": "nope", "messages": []}, timeout=60)
    assert bad.status_code == 404 and "not found" in bad.json()["error"]
    assert httpx.get(f"{cluster}/health/ready").status_code == 200
    import ollama

    r = ollama.Client(host=cluster, headers={"Authorization": f"Bearer {KEY}"}).chat(
        model="tiny", messages=[{"role": "user", "content": "hi"}], options={"num_predict": 3, "temperature": 0})
    assert r.message.role == "assistant" and r.eval_count == 3


def test_both_replicas_serve_and_a_conversation_sticks(cluster):
    c = client(cluster)
    with cf.ThreadPoolExecutor(8) as pool:  # concurrent conversations: least outstanding tokens spreads them
        first_turns = list(pool.map(lambda i: chat(c, conversation(i, 1), max_tokens=32, ignore_eos=True), range(8)))
    assert len({replica for _, replica in first_turns}) == 2
    for i, (_, replica) in enumerate(first_turns[:4]):
        later = [chat(c, conversation(i, turns))[1] for turns in (2, 3)]
        assert later == [replica, replica], f"conversation {i} moved replicas"


def test_killing_a_replica_under_load_loses_no_unstarted_request(cluster):
    c = client(cluster)
    # one long stream per replica, so each is mid-generation when one is killed
    streams = [c.chat.completions.with_streaming_response.create(
        model="tiny", messages=conversation(100 + i, 1), max_tokens=2000, stream=True, temperature=0,
        extra_body={"ignore_eos": True}) for i in range(2)]
    opened = [s.__enter__() for s in streams]
    replicas = [o.headers["x-athanor-replica"] for o in opened]
    lines = [o.iter_lines() for o in opened]
    for it in lines:
        next(line for line in it if line.startswith("data: {"))  # streaming has started on both
    assert len(set(replicas)) == 2
    victim, survivor = replicas

    def later_turn(i):  # continuations of the victim's conversation: affinity sends them to the victim
        raw = c.chat.completions.with_raw_response.create(
            model="tiny", messages=conversation(100, 2) + [{"role": "user", "content": f"again {i}"}],
            max_tokens=1000, temperature=0, extra_body={"ignore_eos": True})  # still running at the kill
        return raw.parse().choices[0].message.content, raw.headers["x-athanor-replica"], raw.headers["x-athanor-attempts"]

    with cf.ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(later_turn, i) for i in range(6)]
        deadline = time.monotonic() + 60
        while routed(cluster).get(victim, 0) < 3:  # the stream and at least two of the later turns are on the victim
            assert time.monotonic() < deadline, "the later turns never reached the victim"
            time.sleep(0.01)
        actor = next(a for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].endswith(f"#{victim}"))
        ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]), no_restart=True)
        results = [f.result(timeout=120) for f in futures]  # every one answers, re-sent if the victim died first
    assert all(text for text, _, _ in results)
    retried = [r for r in results if int(r[2]) > 1]
    assert retried and all(replica == survivor for _, replica, _ in retried)

    victim_lines = list(lines[0])  # ends early without hanging: it had started, so it is not replayed
    assert "data: [DONE]" not in victim_lines
    survivor_lines = [line for line in lines[1] if line.startswith("data: ")]
    assert survivor_lines[-1] == "data: [DONE]"  # the other replica finished its stream
    for s in streams:
        s.__exit__(None, None, None)
    for i in range(3):  # and the endpoint keeps serving
        text, replica = chat(c, conversation(300 + i, 1))
        assert text and replica != victim


def test_zz_deleting_the_app_drains_an_open_stream(cluster):
    """Ray's graceful shutdown (what SIGTERM to `athanor serve --replicas` and `serve shutdown` do): a stream that
    is running when the app is deleted finishes before the replicas go. Runs last: it removes the app."""
    import threading

    c = client(cluster)
    with c.chat.completions.with_streaming_response.create(
            model="tiny", messages=conversation(900, 1), max_tokens=300, stream=True, temperature=0,
            extra_body={"ignore_eos": True}) as opened:
        it = opened.iter_lines()
        next(line for line in it if line.startswith("data: {"))
        deleting = threading.Thread(target=serve.delete, args=("default",))
        deleting.start()
        rest = [line for line in it if line.startswith("data: ")]
    deleting.join(timeout=120)
    assert rest[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in rest if line.startswith("data: {")]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
