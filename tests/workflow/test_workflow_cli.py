"""`athanor workflow …` through typer's runner: validate, run (+ --stream), runs, show, export."""

from __future__ import annotations

import json

import yaml
from typer.testing import CliRunner

from athanor.workflow.cli import workflow_app
from tests.workflow.conftest import FIXTURES, dify_app, edge, end, node, start

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(workflow_app, list(args))


def test_validate_ok_and_problems(tmp_path):
    ok = invoke("validate", str(FIXTURES / "parallel_branches_w1.yml"))
    assert ok.exit_code == 0 and "ok: parallel_switch_w1 (workflow, 6 nodes, 8 edges)" in ok.output
    bad = tmp_path / "bad.yml"
    bad.write_text(yaml.safe_dump(dify_app([start(), node("x", "warp-drive"), end(o=["ghost", "v"])],
                                           [edge("start", "x"), edge("x", "end")])))
    result = invoke("validate", str(bad))
    assert result.exit_code == 1
    assert "x: unknown node type 'warp-drive'" in result.output
    assert "end: variable #ghost.v# is not defined" in result.output


def test_run_show_runs_and_export(tmp_path):
    result = invoke("run", str(FIXTURES / "parallel_branches_w1.yml"), "--input", "switch=1")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"1": "Code 1", "2": "Code 2", "3": None}
    runs = invoke("runs")
    assert runs.exit_code == 0 and "parallel_switch_w1" in runs.output and "succeeded" in runs.output
    run_id = runs.output.splitlines()[1].split()[0]
    shown = invoke("show", run_id)
    assert shown.exit_code == 0 and "status succeeded" in shown.output
    steps = [line.split()[1] for line in shown.output.splitlines() if line.strip()[:1].isdigit()]  # "N  node  ..."
    assert "gate" in steps and "c3" not in steps, shown.output  # c3's branch was skipped
    # (not a substring test on the whole output: the run id is a random uuid, which can contain "c3")
    as_json = json.loads(invoke("show", run_id, "--json").stdout)
    assert as_json["inputs"] == {"switch": 1} and len(as_json["node_executions"]) == 5
    out = tmp_path / "exported.yml"
    assert invoke("export", str(FIXTURES / "parallel_branches_w1.yml"), "--out", str(out)).exit_code == 0
    assert yaml.safe_load(out.read_text()) == yaml.safe_load((FIXTURES / "parallel_branches_w1.yml").read_text())


def test_run_stream_chat_and_errors():
    chat = FIXTURES / "hello_branch_chat_w1.yml"
    result = invoke("run", str(chat), "--query", "hello you", "--stream")
    assert result.exit_code == 0 and result.stdout.strip() == "Hi there! turn 1"
    conversation = result.stderr.split("conversation ")[1].split()[0]
    again = invoke("run", str(chat), "--query", "hello twice", "--conversation-id", conversation)
    assert again.exit_code == 0 and again.stdout.strip() == "Hi there! turn 2"
    from athanor.workflow.runs import RunStore

    assert RunStore().conversation(conversation)["variables"] == {"turns": ["hello you", "hello twice"]}
    events = invoke("run", str(chat), "--query", "other", "--events")
    names = [json.loads(line)["event"] for line in events.stdout.splitlines()]
    assert names[0] == "workflow_started" and names[-2:] == ["message_end", "workflow_finished"]
    missing = invoke("run", str(FIXTURES / "passthrough_w1.yml"))
    assert missing.exit_code != 0 and "input 'query' is required" in str(missing.exception or missing.output)
    bad = invoke("run", str(FIXTURES / "passthrough_w1.yml"), "--input", "novalue")
    assert bad.exit_code != 0 and "not KEY=VALUE" in str(bad.exception or bad.output)
