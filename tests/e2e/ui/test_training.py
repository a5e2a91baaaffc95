"""Training page in a real browser: start a run from the form and watch the loss curve gain points, stop it;
start another from a pasted LLaMA-Factory YAML and see it finish with its final loss and the model it made."""

from __future__ import annotations

import json

import httpx
import yaml

DATA = [{"instruction": "capital of France?", "output": "Paris."},
        {"instruction": "hello", "output": "hello world, how are you?"}]
POINTS = "Number(document.querySelector('#loss-chart').dataset.points || 0)"
LONG = 240_000  # ms: the first run starts a Python child that imports torch on 2 shared cores


def _points(page) -> int:
    return page.evaluate(POINTS)


def test_form_run_plots_loss_and_stops(console, tmp_path, tiny_hf_dir):
    server, page = console.server, console.page
    data = tmp_path / "alpaca.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in DATA))
    console.open("/ui/training")
    page.fill("#t-model", str(tiny_hf_dir))
    page.fill("#t-dataset", str(data))
    page.fill("#t-max-steps", "100000")
    page.fill("#t-lr", "5e-3")
    page.click("#t-start")
    page.locator("#live-status", has_text="running").wait_for(timeout=LONG)
    page.wait_for_function(f"{POINTS} >= 1", timeout=LONG)
    first = _points(page)
    page.wait_for_function(f"{POINTS} >= {first + 3}", timeout=LONG)  # the curve grows while it runs
    assert page.locator("#loss-chart canvas").count() >= 1  # uPlot drew it
    assert "loss" in page.locator("#live-step").inner_text()
    console.shot("training")

    job_id = page.locator("#live-id").inner_text()
    page.click("#live-stop")
    page.locator("#live-status", has_text="cancelled").wait_for()
    job = httpx.get(f"{server.url}/v1/fine_tuning/jobs/{job_id}", headers=server.headers, timeout=10).json()
    assert job["status"] == "cancelled"
    assert page.locator(f"tr.job-row[data-job-id='{job_id}']", has_text="cancelled").count() == 1


def test_yaml_run_finishes_with_its_model(console, tmp_path, tiny_hf_dir):
    server, page = console.server, console.page
    data = tmp_path / "alpaca.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in DATA))
    config = {"model_name_or_path": str(tiny_hf_dir), "stage": "sft", "finetuning_type": "lora", "lora_rank": 4,
              "dataset": str(data), "cutoff_len": 64, "max_steps": 3, "logging_steps": 1, "learning_rate": 5e-3,
              "save_strategy": "no"}
    console.open("/ui/training")
    page.check("input[name=mode][value=yaml]")
    assert page.locator("#t-yaml").is_visible() and not page.locator("#t-model").is_visible()
    page.fill("#t-yaml", "lora_rnak: 8\n" + yaml.safe_dump(config))  # a typo first: the checker's message shows
    page.click("#t-start")
    page.locator("#t-error", has_text="did you mean 'lora_rank'").wait_for()
    # Chromium logs the refused request (HTTP 400) as a console error: that one is expected, nothing else.
    assert len(console.errors) == 1 and "status of 400" in console.errors[0], console.errors
    console.errors.clear()
    page.fill("#t-yaml", yaml.safe_dump(config))
    page.fill("#t-suffix", "yaml")
    page.click("#t-start")
    page.locator("#live-status", has_text="succeeded").wait_for(timeout=LONG)
    assert _points(page) == 3
    job_id = page.locator("#live-id").inner_text()
    job = httpx.get(f"{server.url}/v1/fine_tuning/jobs/{job_id}", headers=server.headers, timeout=10).json()
    assert job["fine_tuned_model"].startswith("ft-yaml-")
    row = page.locator(f"tr.job-row[data-job-id='{job_id}']")
    assert job["fine_tuned_model"] in row.inner_text() and f"{job['final_loss']:.4f}" in row.inner_text()
    models = httpx.get(f"{server.url}/v1/models", headers=server.headers, timeout=10).json()["data"]
    assert any(m["id"].startswith(job["fine_tuned_model"]) for m in models)
    console.shot("training-done")
