"""`athanor eval` on OpenAI-evals-style JSONL: scorers (each right and wrong), item parsing, the Wilson interval,
and real runs of the built-in model (greedy, so two runs agree item by item) stored, reloaded and linked to their
traces (feedback and held-out flags land in traces.sqlite)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from athanor.llm.base import ChatResponse, ToolCall, Usage
from athanor.ops import scorers
from athanor.ops.compare import compare_runs
from athanor.ops.eval_store import EvalStore
from athanor.ops.evals import load_items, load_run, run_eval, score_items, wilson
from athanor.ops.scorers import Reply
from athanor.ops.trace_store import TraceStore

CAPITALS = [("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Japan", "Tokyo"),
            ("Egypt", "Cairo"), ("Russia", "Moscow"), ("Canada", "Ottawa")]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def capitals_file(tmp_path: Path) -> Path:
    """The items as openai/evals writes them (chat input + ideal), with the prompt/messages/answer aliases mixed in."""
    records = []
    for i, (country, city) in enumerate(CAPITALS):
        q = f"What is the capital of {country}? Answer with one word."
        if i % 3 == 1:
            records.append({"prompt": q, "ideal": city})
        elif i % 3 == 2:
            records.append({"messages": [{"role": "user", "content": q}], "answer": [city, city.upper()]})
        else:
            records.append({"input": [{"role": "system", "content": "You are a geography quiz."},
                                      {"role": "user", "content": q}], "ideal": city})
    return write_jsonl(tmp_path / "capitals.jsonl", records)


# --- scorers -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,reply,ideal,ok", [
    ("exact", "  Paris\n", "Paris", True),
    ("exact", "paris", "Paris", False),  # case-sensitive unless told
    ("exact", "Paris.", ["Rome", "Paris"], False),
    ("exact", "Rome", ["Paris", "Rome"], True),
    ("match", "Paris is the capital", "Paris", True),
    ("match", "The capital is Paris", "Paris", False),
    ("contains", "The capital of France is Paris.", "Paris", True),
    ("contains", "The capital of France is Lyon.", ["Paris", "paris"], False),
    ("fuzzy", "the Paris!", "paris", True),
    ("fuzzy", "Lyon", "Paris", False),
    ("regex", "The answer is 42.", r"\b42\b", True),
    ("regex", "The answer is 420.", r"\b42\b", False),
    ("json-schema", '```json\n{"city": "Paris", "population": 2}\n```',
     {"type": "object", "required": ["city"], "properties": {"population": {"type": "integer"}}}, True),
    ("json-schema", '{"city": "Paris", "population": "many"}',
     {"type": "object", "required": ["city"], "properties": {"population": {"type": "integer"}}}, False),
    ("json-schema", "Paris", {"type": "object"}, False),
])
def test_string_and_schema_scorers(name, reply, ideal, ok):
    verdict = scorers.get_scorer(name)(Reply(reply), ideal)
    assert verdict.correct is ok, verdict.detail
    assert verdict.detail and "\n" not in verdict.detail


def test_ignore_case_applies_to_exact_contains_regex():
    assert scorers.exact(Reply("paris"), "Paris", ignore_case=True).correct
    assert scorers.contains(Reply("PARIS!"), "paris", ignore_case=True).correct
    assert scorers.regex(Reply("PARIS"), "^paris$", ignore_case=True).correct
    assert not scorers.regex(Reply("PARIS"), "^paris$").correct


def test_tool_call_scorer_compares_name_and_arguments_as_json():
    ideal = {"name": "add", "arguments": {"a": 2, "b": 3}}
    assert scorers.tool_call(Reply("", [{"name": "add", "arguments": '{"b": 3, "a": 2}'}]), ideal).correct
    assert not scorers.tool_call(Reply("", [{"name": "add", "arguments": '{"a": 2, "b": 4}'}]), ideal).correct
    assert not scorers.tool_call(Reply("", [{"name": "sub", "arguments": '{"a": 2, "b": 3}'}]), ideal).correct
    assert not scorers.tool_call(Reply("2 + 3 = 5"), ideal).correct
    with pytest.raises(ValueError, match="tool-call scorer"):
        scorers.tool_call(Reply(""), "add")


def test_bad_scorer_inputs_are_one_line_value_errors():
    with pytest.raises(ValueError, match="unknown scorer 'bleu'"):
        scorers.get_scorer("bleu")
    with pytest.raises(ValueError, match="judge:MODEL"):
        scorers.get_scorer("judge:")
    with pytest.raises(ValueError, match="regular expression"):
        scorers.regex(Reply("x"), "(")
    with pytest.raises(ValueError, match="JSON schema object"):
        scorers.json_schema(Reply("{}"), "not a schema")


class AnswerBook:
    """A scripted ChatModel (for cases a real model will not produce on demand): the reply for each question, keyed by
    the last user message; thread-safe, records the options of each call."""

    name = "answer-book"

    def __init__(self, answers: dict[str, str | ChatResponse | Exception]) -> None:
        self.answers, self.calls, self._lock = answers, [], threading.Lock()

    def chat(self, messages, *, tools=None, **options) -> ChatResponse:
        with self._lock:
            self.calls.append({"messages": messages, "tools": tools, "options": options})
        reply = self.answers[messages[-1]["content"]]
        if isinstance(reply, Exception):
            raise reply
        return reply if isinstance(reply, ChatResponse) else ChatResponse(reply, [], "stop", Usage(1, 1))


def test_judge_scorer_parses_the_graders_verdict():
    q = "What is the capital of France?"
    grader = AnswerBook({})
    judge = scorers.make_judge(grader)
    for grade, ok in [("The answer matches.\nCORRECT", True), ("incorrect", False), ("Not CORRECT... INCORRECT", False),
                      ("I cannot tell", False)]:
        prompt = scorers.judge_messages(q, "Paris", "It is Paris")[0]["content"]
        grader.answers[prompt] = grade
        verdict = judge(Reply("It is Paris"), "Paris", question=q)
        assert verdict.correct is ok, (grade, verdict)
    assert "no verdict" in verdict.detail
    assert grader.calls[0]["options"]["temperature"] == 0
    assert "[Reference answer]\nParis" in grader.calls[0]["messages"][0]["content"]


# --- items and statistics ------------------------------------------------------------------------------------


def test_items_accept_openai_evals_shapes_and_aliases(tmp_path):
    items = load_items(capitals_file(tmp_path))
    assert len(items) == len(CAPITALS)
    assert items[0].messages[0]["role"] == "system" and items[1].messages == [
        {"role": "user", "content": "What is the capital of Germany? Answer with one word."}]
    assert items[2].ideal == ["Rome", "ROME"]
    assert len(load_items(tmp_path / "capitals.jsonl", limit=3)) == 3


@pytest.mark.parametrize("line,problem", [
    ('{"ideal": "x"}', "no input"), ('{"input": "x"}', "no ideal"), ("not json", "not JSON"),
    ('{"input": [{"content": "x"}], "ideal": "x"}', "messages"), ('{"input": "x", "ideal": 1, "tools": 3}', "tools"),
])
def test_bad_items_name_the_line(tmp_path, line, problem):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"input": "ok", "ideal": "ok"}\n\n' + line + "\n")
    with pytest.raises(ValueError, match=problem) as e:
        load_items(path)
    assert "bad.jsonl:3" in str(e.value)


def test_wilson_interval_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    for k, n in [(0, 6), (6, 6), (19, 22), (50, 100), (1, 1000)]:
        ci = stats.binomtest(k, n).proportion_ci(0.95, method="wilson")
        assert wilson(k, n) == pytest.approx((ci.low, ci.high), abs=1e-6)
    assert wilson(6, 6) == pytest.approx((0.6097, 1.0), abs=1e-4)  # the textbook value, scipy or not


def test_score_items_reuses_the_scorers(tmp_path):
    items = load_items(capitals_file(tmp_path))[:3]
    verdicts = score_items(items, ["Paris", Reply("Bonn"), "ROME"], "exact")
    assert [v.correct for v in verdicts] == [True, False, True]


# --- runs with a scripted model (edge cases) -------------------------------------------------------------------


def test_tool_call_items_pass_tools_and_failed_requests_count_wrong(tmp_path):
    tools = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]
    data = write_jsonl(tmp_path / "tools.jsonl", [
        {"input": "add 2 and 3", "tools": tools, "ideal": {"name": "add", "arguments": {"a": 2, "b": 3}}},
        {"input": "add 1 and 1", "tools": tools, "ideal": {"name": "add", "arguments": {"a": 1, "b": 1}}},
        {"input": "add 5 and 5", "tools": tools, "ideal": {"name": "add", "arguments": {"a": 5, "b": 5}}},
    ])
    model = AnswerBook({
        "add 2 and 3": ChatResponse("", [ToolCall("c1", "add", '{"a": 2, "b": 3}')], "tool_calls", Usage()),
        "add 1 and 1": ChatResponse("", [ToolCall("c2", "add", '{"a": 1, "b": 2}')], "tool_calls", Usage()),
        "add 5 and 5": RuntimeError("engine went away"),
    })
    run = run_eval("", data, "tool-call", chat_model=model, max_tokens=32, trace=False)
    assert [it["correct"] for it in run["items"]] == [True, False, False]
    assert "engine went away" in run["items"][2]["detail"] and run["meta"]["errors"] == 1
    assert all(c["tools"] == tools and c["options"] == {"temperature": 0, "max_tokens": 32} for c in model.calls)
    assert run["model"] == "answer-book" and run["model_digest"] is None
    assert load_run(run["run_id"])["items"][0]["output"].startswith('{"content": "", "tool_calls"')


def test_unknown_run_is_a_key_error():
    with pytest.raises(KeyError):
        load_run("eval-nope")


# --- the built-in model, for real ------------------------------------------------------------------------------


@pytest.mark.slow
def test_smollm2_eval_is_repeatable_stored_and_traced(tmp_path):
    data = capitals_file(tmp_path)
    first = run_eval("smollm2", data, "contains", max_tokens=24, held_out=True)
    # the same eval through the command line, as a user runs it
    from athanor.cli import app

    r = CliRunner().invoke(app, ["eval", "smollm2", str(data), "--scorer", "contains", "--max-tokens", "24", "--json"])
    assert r.exit_code == 0, r.output
    second = json.loads(r.stdout)

    assert first["n"] == second["n"] == len(CAPITALS)
    pick = ("index", "output", "correct", "detail", "input_hash")
    assert [{k: it[k] for k in pick} for it in first["items"]] == [{k: it[k] for k in pick} for it in second["items"]]
    assert first["correct"] >= 5, [it["output"] for it in first["items"]]  # SmolLM2 knows these capitals
    assert first["accuracy"] == first["correct"] / first["n"]
    assert first["ci_low"] <= first["accuracy"] <= first["ci_high"]
    assert first["model_digest"].startswith("sha256:") and first["model_digest"] == second["model_digest"]
    assert first["data_sha256"] == second["data_sha256"] and first["options"]["temperature"] == 0

    same = compare_runs(first, second)  # two greedy runs of one model: no difference at all
    assert same["n_paired"] == len(CAPITALS) and same["diff"] == 0.0 and same["p_value"] == 1.0
    assert not same["worse"] and not any(it["changed"] for it in same["items"])

    stored = load_run(first["run_id"])
    assert [it["output"] for it in stored["items"]] == [it["output"] for it in first["items"]]
    assert {k: stored[k] for k in ("n", "correct", "scorer", "model_digest")} == {
        k: first[k] for k in ("n", "correct", "scorer", "model_digest")}
    with EvalStore() as store:
        assert [r["run_id"] for r in store.list()] == [second["run_id"], first["run_id"]]

    traces = TraceStore()
    try:
        for run, held in ((first, True), (second, False)):
            for it in run["items"]:
                t = traces.get(it["trace_id"])
                assert t is not None and t["kind"] == "eval" and t["held_out"] is held
                root = t["spans"][0]
                assert root["parent_id"] is None and root["attributes"]["athanor.eval.run_id"] == run["run_id"]
                # the model's own llm span (llm/traced.py, where the chat model reports one) nests under the item
                assert all(s["parent_id"] == root["span_id"] for s in t["spans"][1:]), t["spans"]
                (fb,) = t["feedback"]
                assert fb["source"] == f"eval:{run['run_id']}" and fb["score"] == (1.0 if it["correct"] else -1.0)
                assert fb["comment"] == it["detail"]
                assert it["held_out"] is held
    finally:
        traces.close()
