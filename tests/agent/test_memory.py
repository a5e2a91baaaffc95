"""Memory: buffer, window, token-limited summary, and SQLite sessions that outlive the process."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap

import pytest

from athanor.agent.calculator import calculator
from athanor.agent.memory import BufferMemory, SQLiteStore, SummaryMemory, WindowMemory, default_sessions_path
from athanor.agent.react import ReActAgent
from tests.agent.scripted import ScriptedChatModel


def turns(memory, n, start=0):
    for i in range(start, start + n):
        memory.add({"role": "user", "content": f"q{i}"})
        memory.add({"role": "assistant", "content": f"a{i}"})


def test_buffer_keeps_everything():
    m = BufferMemory()
    turns(m, 3)
    assert [x["content"] for x in m.messages()] == ["q0", "a0", "q1", "a1", "q2", "a2"]
    m.clear()
    assert m.messages() == []


def test_window_keeps_the_last_k_turns():
    m = WindowMemory(k=2)
    turns(m, 1)
    assert len(m.messages()) == 2
    turns(m, 3, start=1)
    assert [x["content"] for x in m.messages()] == ["q2", "a2", "q3", "a3"]
    assert len(m.store.load()) == 8  # the full log is kept; the window is a view
    with pytest.raises(ValueError):
        WindowMemory(k=0)


def test_summary_memory_folds_old_messages_into_a_summary():
    model = ScriptedChatModel(["S1: user asked q0..q2", "S2: more"])
    m = SummaryMemory(model, max_tokens=4)  # "qN"/"aN" are 1 token each by the estimate -> 4 newest fit
    turns(m, 2)
    assert [x["content"] for x in m.messages()] == ["q0", "a0", "q1", "a1"]
    assert model.calls == []  # everything fits: no summary yet
    turns(m, 1, start=2)
    view = m.messages()
    assert view[0] == {"role": "system", "content": "Summary of the earlier conversation: S1: user asked q0..q2"}
    assert [x["content"] for x in view[1:]] == ["q1", "a1", "q2", "a2"]
    assert "user: q0\nassistant: a0" in model.calls[0]["messages"][0]["content"]
    assert m.messages() == view and len(model.calls) == 1  # not summarized again
    turns(m, 1, start=3)
    m.messages()
    prompt = model.calls[1]["messages"][0]["content"]
    assert "S1: user asked q0..q2" in prompt and "user: q1" in prompt and "q0" not in prompt.split("New lines")[1]


def test_sqlite_sessions_survive_a_new_connection_and_keep_sessions_apart(tmp_path):
    db = tmp_path / "s.sqlite"
    a = BufferMemory(SQLiteStore("alice", db))
    turns(a, 2)
    SQLiteStore("alice", db).set_summary("sum", 2)
    BufferMemory(SQLiteStore("bob", db)).add({"role": "user", "content": "bob here"})
    again = SQLiteStore("alice", db)
    assert [x["content"] for x in again.load()] == ["q0", "a0", "q1", "a1"]
    assert again.get_summary() == ("sum", 2)
    with sqlite3.connect(db) as raw:  # the file itself holds both sessions
        assert raw.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 5
    again.clear()
    assert again.load() == [] and SQLiteStore("bob", db).load() == [{"role": "user", "content": "bob here"}]


def test_a_new_process_continues_the_conversation(tmp_path):
    """Process 1 runs the agent with a session; process 2 (a fresh interpreter) sees the history in its prompt."""
    db = tmp_path / "sessions.sqlite"
    script = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(tmp_path.parent)!r})
        from athanor.agent.calculator import calculator
        from athanor.agent.memory import BufferMemory, SQLiteStore
        from athanor.agent.react import ReActAgent
        from tests.agent.scripted import ScriptedChatModel
        model = ScriptedChatModel([sys.argv[2]])
        agent = ReActAgent(model, [calculator], memory=BufferMemory(SQLiteStore("s1", {str(db)!r})))
        print(agent.run(sys.argv[1]).answer)
        print(json.dumps(model.calls[0]["messages"][1:]))
    """)
    import json

    def run(question, reply):
        out = subprocess.run([sys.executable, "-c", script, question, reply], capture_output=True, text=True, check=False,
                             timeout=60, cwd=str(__import__("pathlib").Path(__file__).parents[2]))
        assert out.returncode == 0, out.stderr
        answer, messages = out.stdout.strip().split("\n", 1)
        return answer, json.loads(messages)

    answer, first = run("My name is Ada.", "AI: Hello Ada.")
    assert answer == "Hello Ada." and first == [{"role": "user", "content": "My name is Ada."}]
    answer, second = run("What is my name?", "AI: Ada.")
    assert second == [{"role": "user", "content": "My name is Ada."}, {"role": "assistant", "content": "Hello Ada."},
                      {"role": "user", "content": "What is my name?"}]


def test_a_stopped_run_is_remembered_as_no_answer():
    memory = BufferMemory()
    agent = ReActAgent(ScriptedChatModel(["hmm"], repeat_last=True), [calculator], memory=memory, max_iterations=2)
    agent.run("q")
    assert memory.messages()[-1] == {"role": "assistant", "content": "(no answer: stopped after 2 steps)"}


def test_default_sessions_path_is_under_athanor_home(tmp_path, monkeypatch):
    monkeypatch.setenv("ATHANOR_HOME", str(tmp_path))
    assert default_sessions_path() == tmp_path / "agent" / "sessions.sqlite"
    SQLiteStore("x").append({"role": "user", "content": "hi"})
    assert (tmp_path / "agent" / "sessions.sqlite").is_file()
    with pytest.raises(ValueError):
        SQLiteStore("")
