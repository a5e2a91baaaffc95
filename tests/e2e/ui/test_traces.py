"""Traces pages in a real browser: a chat sent through the API shows up in the list, its detail view draws the
span tree, thumbs up and a correction are stored with the trace, filters find it, and the selected trace is
exported as SFT data (a downloaded JSONL file)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import openai

CORRECTION = "Hello! How can I help you today?"


def _chat(server) -> str:
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=server.key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="tiny", max_tokens=8, messages=[{"role": "user", "content": "hello there"}])
    raw.parse()
    return raw.headers["x-trace-id"]


def _trace(server, trace_id: str) -> dict:
    r = httpx.get(f"{server.url}/v1/traces/{trace_id}", headers=server.headers, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def _wait_feedback(server, trace_id: str, check) -> list[dict]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        feedback = _trace(server, trace_id)["feedback"]
        if check(feedback):
            return feedback
        time.sleep(0.2)
    raise AssertionError(f"feedback never arrived: {feedback}")


def test_find_rate_correct_and_export_a_chat(console):
    server, page = console.server, console.page
    trace_id = _chat(server)

    # The list: the new trace is there, with its model; open it.
    console.open("/ui/traces")
    row = page.locator(f"tr.trace-row[data-trace-id='{trace_id}']")
    row.wait_for()
    assert "tiny" in row.inner_text()
    console.shot("traces")
    row.locator("a").click()
    page.wait_for_url(f"**/ui/traces/{trace_id}")

    # The span tree: the HTTP root and the model call under it, bars placed on the timeline.
    spans = page.locator(".span-row")
    spans.first.wait_for()
    stored = _trace(server, trace_id)["spans"]
    assert spans.count() == len(stored) >= 2
    kinds = [spans.nth(i).get_attribute("data-kind") for i in range(spans.count())]
    assert kinds[0] == "http" and "llm" in kinds
    llm = page.locator(".span-row[data-kind=llm]")
    assert int(llm.get_attribute("data-depth")) >= 1  # nested under the root
    assert page.locator(".span-row[data-kind=http] .bar").get_attribute("style").startswith("left:0.000%")
    assert "hello there" in page.locator("pre.io-input").inner_text()  # the model span's captured input
    assert f"spans\n{len(stored)}" in page.locator("#trace-summary").inner_text()

    # Thumbs up: stored with the trace as score 1.
    page.click("#thumb-up")
    feedback = _wait_feedback(server, trace_id, lambda f: len(f) == 1)
    assert feedback[0]["score"] == 1
    page.locator("#feedback-score", has_text="good").wait_for()

    # A correction: stored too (the answer it should have given).
    page.fill("#feedback-correction", CORRECTION)
    page.click("#feedback-save")
    feedback = _wait_feedback(server, trace_id, lambda f: len(f) == 2)
    assert feedback[-1]["correction"] == CORRECTION
    page.locator("#feedback-saved", has_text="correction").wait_for()
    page.evaluate("window.scrollTo(0, 0)")
    console.shot("trace")

    # Filters: the latest verdict (the correction) is bad; errors-only hides it.
    console.open("/ui/traces")
    row.wait_for()
    page.select_option("#f-feedback", "bad")
    row.wait_for()
    page.select_option("#f-feedback", "none")
    row.wait_for(state="detached")
    page.select_option("#f-feedback", "")
    row.wait_for()
    page.check("#f-errors")
    row.wait_for(state="detached")
    page.uncheck("#f-errors")
    row.wait_for()

    # Select it and export SFT data: one record, the correction as the answer.
    row.locator("input.pick").check()
    assert page.locator("#selected-count").inner_text() == "1 selected"
    with page.expect_download() as download:
        page.click("#export-sft")
    text = Path(download.value.path()).read_text(encoding="utf-8")
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert len(lines) == 1
    assert download.value.suggested_filename == "traces-sft.jsonl"
    turns = lines[0]["conversations"]
    assert turns[-1]["value"] == CORRECTION and "hello there" in turns[0]["value"]
    page.locator("#export-note", has_text="1 SFT record").wait_for()

    # DPO: the correction is chosen, what the model said is rejected.
    with page.expect_download() as download:
        page.click("#export-dpo")
    pairs = [json.loads(line) for line in Path(download.value.path()).read_text(encoding="utf-8").splitlines()]
    llm_span = next(s for s in _trace(server, trace_id)["spans"] if s["kind"] == "llm")
    answer = json.loads(llm_span["attributes"]["gen_ai.output.messages"])
    assert len(pairs) == 1 and pairs[0]["chosen"]["value"] == CORRECTION
    assert pairs[0]["rejected"]["value"] == (answer[0]["content"] if isinstance(answer, list) else answer["content"])


def test_ops_pages_fit_a_phone(console):
    """Traces (list and detail), Training and Evals at 375 px: nothing wider than the screen (tables scroll)."""
    page = console.page
    trace_id = _chat(console.server)
    page.set_viewport_size({"width": 375, "height": 740})
    for path, ready in (("/ui/traces", f"tr.trace-row[data-trace-id='{trace_id}']"),
                        (f"/ui/traces/{trace_id}", ".span-row"), ("/ui/training", "#train-form"),
                        ("/ui/evals", "#eval-table")):
        console.open(path)
        page.locator(ready).first.wait_for()
        assert page.evaluate("document.documentElement.scrollWidth") <= 375, path
        if path == f"/ui/traces/{trace_id}":
            console.shot("trace-phone")
