"""The chat playground in a real browser against a real server: the answer streams in token by token, equals
the server's own non-streamed greedy answer, shows its token count, tokens/s and a link to its trace; compare
mode streams the same prompt from two models at once."""

from __future__ import annotations

import re

import httpx
import pytest

PROMPT = "Name three colours of the rainbow."
# the page's answer pane records (time, length) at every change: the text must grow while it streams
WATCH_ANSWER = """side => {
  window.__growth = window.__growth || {};
  const seen = window.__growth[side] = [];
  new MutationObserver(() => seen.push([performance.now(), document.getElementById('answer-' + side).textContent.length]))
    .observe(document.getElementById('answer-' + side), {childList: true, characterData: true, subtree: true});
}"""


def _greedy(server, model: str, max_tokens: int) -> dict:
    body = {"model": model, "messages": [{"role": "user", "content": PROMPT}], "temperature": 0,
            "max_tokens": max_tokens}
    r = httpx.post(f"{server.url}/v1/chat/completions", json=body, headers=server.headers, timeout=300)
    assert r.status_code == 200, r.text
    return r.json()


def _fill(page, model: str, max_tokens: int) -> None:
    page.wait_for_function("document.querySelectorAll('#model option').length >= 2")
    page.select_option("#model", model)
    page.fill("#temperature", "0")
    page.fill("#max-tokens", str(max_tokens))
    page.fill("#prompt", PROMPT)


def _finished(page, side: str) -> None:
    page.wait_for_function(f"document.getElementById('finish-{side}').textContent.startsWith('finish:')",
                           timeout=300_000)


def _assert_streamed(page, side: str) -> None:
    growth = page.evaluate(f"window.__growth['{side}']")
    lengths = [n for _, n in growth]
    assert lengths == sorted(lengths), "the answer only grows"
    partial = [(t, n) for t, n in growth if 0 < n < lengths[-1]]
    assert len({t for t, _ in partial}) >= 2, f"expected the text to appear piece by piece, saw {growth}"


@pytest.mark.slow
def test_chat_streams_tokens_with_speed_and_trace(console):
    server = console.server
    want = _greedy(server, "smollm2", 24)
    page = console.open("/ui/chat")
    _fill(page, "smollm2", 24)
    page.evaluate(WATCH_ANSWER, "a")
    page.click("#send")
    _finished(page, "a")
    _assert_streamed(page, "a")
    assert page.inner_text("#answer-a") == want["choices"][0]["message"]["content"]  # greedy: same answer
    assert int(page.inner_text("#tokens-a")) == want["usage"]["completion_tokens"]
    assert float(page.inner_text("#tps-a")) > 0
    assert int(page.inner_text("#ttft-a")) >= 0
    href = page.get_attribute("#trace-a", "href")
    trace_id = re.fullmatch(r"/ui/traces/([0-9a-f]{32})", href).group(1)
    server.app.state.tracing.flush()
    trace = server.app.state.tracing.store.get(trace_id)
    assert trace is not None and any(s["kind"] == "llm" for s in trace["spans"])
    console.shot("chat")


@pytest.mark.slow
def test_compare_two_models_side_by_side(console):
    server = console.server
    want_a, want_b = _greedy(server, "smollm2", 16), _greedy(server, "tiny", 16)
    page = console.open("/ui/chat")
    assert not page.locator("#model-b").is_visible() and not page.locator("#pane-b").is_visible()
    page.check("#compare")
    assert page.locator("#pane-b").is_visible()
    _fill(page, "smollm2", 16)
    page.select_option("#model-b", "tiny")
    page.evaluate(WATCH_ANSWER, "a")
    page.evaluate(WATCH_ANSWER, "b")
    page.click("#send")
    _finished(page, "a")
    _finished(page, "b")
    for side, want in (("a", want_a), ("b", want_b)):
        assert page.inner_text(f"#model-name-{side}") == ("smollm2" if side == "a" else "tiny")
        assert page.inner_text(f"#answer-{side}") == want["choices"][0]["message"]["content"]
        assert int(page.inner_text(f"#tokens-{side}")) == want["usage"]["completion_tokens"]
        assert page.get_attribute(f"#trace-{side}", "href").startswith("/ui/traces/")
    # sent at once, not one after the other: B (the small, fast model) was answering before A had finished
    a, b = (page.evaluate(f"window.__growth['{s}']") for s in "ab")
    assert b[0][0] < a[-1][0], "the second model's answer began only after the first had ended"
    console.shot("chat-compare")
