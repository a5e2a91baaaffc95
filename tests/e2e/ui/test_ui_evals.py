"""Evals page in a real browser: two stored runs listed with accuracy and CI; the compare view shows the
per-item diff and the same verdict as ops.compare.compare_runs; Promote moves the serving alias."""

from __future__ import annotations

import time

from athanor.ops.compare import compare_runs
from athanor.ops.eval_store import EvalStore
from athanor.ops.evals import wilson

QUESTIONS = [(f"What is {i} + {i}?", str(2 * i)) for i in range(14)]


def _run(run_id: str, model: str, right: set[int], created: float) -> dict:
    items = [{"index": i, "input": [{"role": "user", "content": q}], "ideal": ideal,
              "output": ideal if i in right else f"{ideal}0", "correct": i in right, "trace_id": None,
              "held_out": True} for i, (q, ideal) in enumerate(QUESTIONS)]
    n, correct = len(items), len(right)
    lo, hi = wilson(correct, n)
    return {"run_id": run_id, "kind": "items", "model": model, "model_digest": None, "data": "/data/sums.jsonl",
            "data_sha256": "0" * 64, "scorer": "exact", "options": {}, "n": n, "correct": correct,
            "accuracy": correct / n, "ci_low": lo, "ci_high": hi, "held_out": True, "created": created,
            "duration": 1.0, "meta": {}, "items": items}


def test_compare_two_runs(console):
    page = console.page
    now = time.time()
    a = _run("eval-ui-a", "tiny", set(range(13)), now - 60)      # 13 of 14 right
    b = _run("eval-ui-b", "ft-tiny", {0, 1, 13}, now)           # breaks 11 items, fixes 1
    with EvalStore() as store:  # $ATHANOR_HOME/evals.sqlite: the server reads it per request
        store.save(a)
        store.save(b)
    expected = compare_runs(a, b)
    assert expected["worse"]

    console.open("/ui/evals")
    row = page.locator("tr.eval-row[data-run-id='eval-ui-a']")
    row.wait_for()
    assert "92.9%" in row.inner_text()  # 13/14
    assert f"{100 * a['ci_low']:.1f}%" in row.locator("td.ci").inner_text()
    console.shot("evals")
    page.check("tr.eval-row[data-run-id='eval-ui-a'] input.pick-a")
    page.check("tr.eval-row[data-run-id='eval-ui-b'] input.pick-b")
    page.click("#compare-button")
    page.locator("#verdict-text").wait_for()
    assert page.locator("#verdict-text").inner_text() == "B is worse than A beyond noise"
    changed = [it for it in expected["items"] if it["changed"]]
    rows = page.locator("tr.diff-row")
    assert rows.count() == len(changed) == 12
    assert page.locator("tr.diff-row", has_text="broke").count() == 11
    assert page.locator("tr.diff-row", has_text="fixed").count() == 1
    assert page.url.endswith("/ui/evals?a=eval-ui-a&b=eval-ui-b")
    console.shot("evals-compare")

    # The compare view is linkable; "only items that differ" off shows every paired item.
    console.open("/ui/evals?a=eval-ui-a&b=eval-ui-b")
    page.locator("#verdict-text").wait_for()
    page.uncheck("#only-diff")
    assert page.locator("tr.diff-row").count() == expected["n_paired"] == 14


def test_promote_from_the_compare_view_moves_the_alias(console):
    """B better than A: the Promote button points `prod` at B's model, and the server answers `prod` from it at once.
    B worse: no button, and the API refuses with the numbers (409)."""
    import httpx

    server = console.server
    headers = {"Authorization": f"Bearer {server.key}"}
    r = httpx.post(f"{server.url}/api/create", headers=headers, timeout=60,
                   json={"model": "tiny-b", "from": "tiny", "system": "Answer briefly.", "stream": False})
    assert r.status_code == 200, r.text
    now = time.time()
    a = _run("eval-promote-a", "tiny", {0, 1}, now - 30)                 # 2 of 14
    b = _run("eval-promote-b", "tiny-b", set(range(13)), now)            # 13 of 14: better beyond noise
    with EvalStore() as store:
        store.save(a)
        store.save(b)
    page = console.page
    console.open("/ui/evals?a=eval-promote-a&b=eval-promote-b")
    page.locator("#verdict-text").wait_for()
    page.click("#promote-button")
    page.wait_for_function("document.getElementById('promote-button').textContent === 'Promoted'")
    shown = httpx.post(f"{server.url}/api/show", headers=headers, json={"model": "prod"}, timeout=60).json()
    assert shown["system"] == "Answer briefly."  # prod now serves tiny-b

    refused = httpx.post(f"{server.url}/v1/promote", headers=headers, timeout=60,
                         json={"a": "eval-promote-b", "b": "eval-promote-a"})
    assert refused.status_code == 409 and "worse" in refused.json()["error"]["message"]
    shown = httpx.post(f"{server.url}/api/show", headers=headers, json={"model": "prod"}, timeout=60).json()
    assert shown["system"] == "Answer briefly."  # unchanged
    assert httpx.post(f"{server.url}/v1/promote", headers=headers, json={"a": "nope", "b": "eval-promote-b"},
                      timeout=60).status_code == 404
