"""Fine-tuning jobs over HTTP, driven by the real `openai` client: real `athanor train` child processes on the tiny
model, loss events while a job runs, the queue (one job at a time), cancel, and the trained model in the store."""

from __future__ import annotations

import json
import os
import time

import httpx
import openai
import pytest
import yaml

from athanor.train.jobs import JobManager
from tests.e2e.conftest import make_store, small_engine_config, start_server

DATA = [{"instruction": "capital of France?", "output": "Paris."},
        {"instruction": "hello", "output": "hello world, how are you?"}]


def _config(tiny_hf_dir, data, max_steps: int) -> dict:
    return {"model_name_or_path": str(tiny_hf_dir), "stage": "sft", "finetuning_type": "lora", "lora_rank": 4,
            "dataset": str(data), "cutoff_len": 64, "max_steps": max_steps, "logging_steps": 1,
            "learning_rate": 5e-3, "lr_scheduler_type": "constant", "save_strategy": "no", "seed": 0}


def _wait(fetch, until, what: str, timeout: float = 240.0):
    """Poll `fetch()` until `until(value)` holds; return that value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fetch()
        if until(value):
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_hf_dir):
    home = tmp_path_factory.mktemp("jobs_home")
    data = home / "alpaca.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in DATA))
    app = create_app_with_jobs(home, tiny_hf_dir)
    with start_server(app) as s:
        yield s, openai.OpenAI(base_url=s.url + "/v1", api_key="x", max_retries=0), data
    app.state.train_jobs.shutdown()


def create_app_with_jobs(home, tiny_hf_dir):
    from athanor.serve.app import create_app
    from athanor.serve.train_jobs import register_model

    store = make_store(home, tiny_hf_dir)
    app = create_app(store=store, engine_config=small_engine_config())
    app.state.train_jobs = JobManager(home / "jobs", on_success=lambda job: register_model(store, job))
    return app


def _losses(client, job_id: str) -> list[dict]:
    events = client.fine_tuning.jobs.list_events(job_id, limit=1000).data
    return [e.data for e in events if e.type == "metrics"]


def test_a_job_streams_loss_queues_the_next_and_cancel_stops_it(served, tiny_hf_dir):
    server, client, data = served
    long = client.fine_tuning.jobs.create(model=str(tiny_hf_dir), training_file=str(data),
                                          extra_body={"config": _config(tiny_hf_dir, data, 100000)})
    short = client.fine_tuning.jobs.create(model=str(tiny_hf_dir), training_file=str(data), suffix="tiny",
                                           hyperparameters={"n_epochs": 1, "batch_size": 2},
                                           extra_body={"yaml": yaml.safe_dump(_config(tiny_hf_dir, data, 4))})
    assert long.object == "fine_tuning.job" and long.status == "running"
    assert short.status == "queued"  # one job at a time: it waits for the first
    assert {j.id for j in client.fine_tuning.jobs.list().data} >= {long.id, short.id}

    # Loss events arrive while it runs, step by step, with the learning rate.
    first = _wait(lambda: _losses(client, long.id), bool, "the first loss event")
    more = _wait(lambda: _losses(client, long.id), lambda ls: len(ls) >= len(first) + 2, "more loss events")
    steps = [d["step"] for d in more][::-1]  # events are listed newest first
    assert steps == sorted(steps) and steps[0] >= 1
    assert all(d["loss"] > 0 and d["learning_rate"] == pytest.approx(5e-3) for d in more)
    assert client.fine_tuning.jobs.retrieve(long.id).status == "running"

    pid = server.app.state.train_jobs.get(long.id).pid
    cancelled = client.fine_tuning.jobs.cancel(long.id)
    assert cancelled.status == "cancelled" and cancelled.finished_at
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # the whole group is gone
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.cancel(long.id)  # it already ended

    # The queued job starts once the first is gone, runs to the end and is served as a new model.
    done = _wait(lambda: client.fine_tuning.jobs.retrieve(short.id), lambda j: j.status not in ("queued", "running"),
                 "the second job to finish")
    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model.startswith("ft-tiny-")
    assert [d["step"] for d in _losses(client, short.id)][::-1] == [1, 2, 3, 4]
    assert done.hyperparameters.n_epochs == 1 and done.hyperparameters.batch_size == 2
    events = client.fine_tuning.jobs.list_events(short.id, limit=1000).data
    assert events[0].message == "The job has successfully completed"
    reply = client.chat.completions.create(model=done.fine_tuned_model, max_tokens=4,
                                           messages=[{"role": "user", "content": "hello"}])
    assert reply.choices[0].message.content is not None


def test_bad_configs_are_refused_with_the_checker_message(served, tiny_hf_dir):
    server, client, data = served
    with pytest.raises(openai.BadRequestError) as e:
        client.fine_tuning.jobs.create(model=str(tiny_hf_dir), training_file=str(data),
                                       extra_body={"config": {"lora_rnak": 8}})
    assert "unknown key 'lora_rnak'; did you mean 'lora_rank'?" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        client.fine_tuning.jobs.create(model=str(tiny_hf_dir), training_file=str(data) + ".missing")
    assert "dataset" in e.value.body["message"]
    r = httpx.post(server.url + "/v1/fine_tuning/jobs", json={"model": str(tiny_hf_dir), "yaml": "[1, 2"})
    assert r.status_code == 400 and "not valid YAML" in r.json()["error"]["message"]
    r = httpx.post(server.url + "/v1/fine_tuning/jobs", json={"training_file": str(data)})
    assert r.status_code == 400 and r.json()["error"]["param"] == "model"
    hostile = [{"model": str(tiny_hf_dir), "training_file": str(data), "config": {"tokenized_path": "/etc/x"}},
               {"model": str(tiny_hf_dir), "training_file": str(data), "config": {"tokenized_path": "../../x"}},
               {"model": str(tiny_hf_dir), "hyperparameters": {"learning_rate_multiplier": "lots"}},
               {"model": str(tiny_hf_dir), "hyperparameters": {"n_epochs": "lots"}, "training_file": str(data)},
               {"model": str(tiny_hf_dir), "config": {"a": 1}, "yaml": "b: 2"},
               {"model": str(tiny_hf_dir), "config": [1, 2]}, {"model": str(tiny_hf_dir), "yaml": "- 1"},
               {"model": str(tiny_hf_dir), "suffix": "../../etc"}, {"model": str(tiny_hf_dir), "nope": 1},
               # code named by the request never runs in the server: a module, or a .py file on its disk
               {"model": str(tiny_hf_dir), "training_file": str(data),
                "config": {"stage": "grpo", "reward_funcs": "antigravity:geohash"}},
               {"model": str(tiny_hf_dir), "training_file": str(data),
                "yaml": "stage: grpo\nreward_funcs: [/tmp/evil.py:reward]\n"}]
    for body in hostile:
        r = httpx.post(server.url + "/v1/fine_tuning/jobs", json=body)
        assert r.status_code == 400 and r.json()["error"]["message"], (body, r.text)
        assert "\n" not in r.json()["error"]["message"]
    assert httpx.get(server.url + "/v1/fine_tuning/jobs?limit=x").status_code == 400
    assert not any(j.status in ("queued", "running") and j.model != str(tiny_hf_dir)
                   for j in client.fine_tuning.jobs.list().data)


def test_unknown_and_finished_jobs(served):
    server, client, _ = served
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.retrieve("ftjob-nope")
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.cancel("ftjob-nope")
    r = httpx.get(server.url + "/v1/fine_tuning/jobs/ftjob-nope/events")
    assert r.status_code == 404 and r.json()["error"]["code"] == "job_not_found"


def test_after_a_restart_a_lost_job_is_failed_and_a_queued_one_runs(tmp_path):
    root = tmp_path / "jobs"
    for job_id, status in (("ftjob-lost", "running"), ("ftjob-waiting", "queued")):
        (root / job_id).mkdir(parents=True)
        job = {"id": job_id, "model": "m", "config": {"output_dir": str(root / job_id / "output")},
               "status": status, "created_at": 1}
        (root / job_id / "job.json").write_text(json.dumps(job))
    # the queued job's config has lost its model since: the child `athanor train` refuses it and exits non-zero
    (root / "ftjob-waiting" / "config.yaml").write_text(f"model_name_or_path: {tmp_path / 'gone'}\ndataset: x.jsonl\n")
    manager = JobManager(root)
    lost = manager.get("ftjob-lost")
    assert lost.status == "failed" and "server stopped" in lost.error
    assert json.loads((root / "ftjob-lost" / "job.json").read_text())["status"] == "failed"
    waiting = _wait(lambda: manager.get("ftjob-waiting"), lambda j: j.status not in ("queued", "running"),
                    "the re-queued job to end", timeout=120)
    assert waiting.status == "failed" and waiting.returncode != 0 and waiting.started_at
    assert "model_name_or_path" in waiting.error or "gone" in waiting.error, waiting.error


def test_the_serve_side_never_imports_transformers():
    """The job manager reads the log callbacks.py writes without importing it (it imports transformers)."""
    import subprocess
    import sys

    from athanor.train import callbacks, jobs

    assert jobs.LOG_FILE == callbacks.LOG_FILE
    code = "import sys, athanor.serve.train_jobs; assert 'transformers' not in sys.modules, 'transformers imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_cancelling_a_queued_job_never_starts_it(tmp_path, tiny_hf_dir):
    data = tmp_path / "alpaca.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in DATA))
    manager = JobManager(tmp_path / "jobs", max_running=0)  # nothing may start: every job waits
    job = manager.create(_config(tiny_hf_dir, data, 3))
    assert job.status == "queued" and job.pid is None
    assert manager.cancel(job.id).status == "cancelled"
    assert job.pid is None and not (job.folder / "train.log").exists()
    with pytest.raises(ValueError, match="already cancelled"):
        manager.cancel(job.id)
