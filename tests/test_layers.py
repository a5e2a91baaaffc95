"""The house plan, checked: no room imports a room above it, only the registry loads a model into an engine, and
ATHANOR_HOME and KEY=VALUE parsing each live in one place.

Every `import` in the package counts, lazy ones inside functions included (they are still dependencies).
Rooms and what each may NOT import are in docs/architecture.md ("Rooms and their imports").
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "athanor"
APPS = ("agent", "workflow", "rag", "ops")

# room -> rooms it must not import (a room is the first part after `athanor.`; top-level modules are their own room)
FORBIDDEN = {
    "text": ("models", "nn", "engine", "runtime", "serve", "llm", "train", "data", *APPS),
    "nn": ("models", "engine", "runtime", "serve", "llm", "train", "text", *APPS),
    "models": ("engine", "runtime", "serve", "llm", "train", *APPS),
    "data": ("engine", "runtime", "serve", "llm", *APPS),
    "engine": ("text", "runtime", "serve", "llm", "train", *APPS),
    "runtime": ("serve", "llm", "train", *APPS),
    "train": ("agent", "llm", "serve", "workflow", "rag", "ops", "runtime", "engine"),
    "llm": ("serve", "train", *APPS),
    **{app: ("serve", "engine", "runtime", *(("ops",) if app != "ops" else ())) for app in APPS},  # apps report
    # to ops only through the seam athanor/tracing.py
}

# who may turn weights into a running engine: the registry (and the LLM it calls), nothing else
ENGINE_MAKERS = {  # call -> the only files allowed to make it
    "LLMEngine": {"runtime/llm.py"},
    "AsyncEngine": {"runtime/registry.py"},
    "LLM.load": set(),
    "LLM.from_manifest": {"runtime/registry.py"},
    "cls.from_manifest": {"runtime/llm.py"},  # LLM.load -> from_manifest, inside the class
    "build_model": {"runtime/llm.py"},
    "ModelRunner": {"engine/engine.py"},
}


def modules() -> list[tuple[str, ast.Module]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        out.append((path.relative_to(PACKAGE).as_posix(), ast.parse(path.read_text(encoding="utf-8"))))
    return out


def room_of(rel: str) -> str:
    return rel.split("/")[0].removesuffix(".py")


def imported_rooms(tree: ast.Module) -> set[tuple[str, int]]:
    """(room, line) for every `athanor.X` this module imports, at any depth."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + ([f"{node.module}.{a.name}" for a in node.names] if node.module == "athanor" else [])
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "athanor" and len(parts) > 1:
                found.add((parts[1], node.lineno))
    return found


def upward_imports(mods) -> list[str]:
    bad = []
    for rel, tree in mods:
        banned = FORBIDDEN.get(room_of(rel), ())
        bad += [f"athanor/{rel}:{line} imports athanor.{room}" for room, line in imported_rooms(tree) if room in banned]
    return sorted(bad)


def call_name(node: ast.Call) -> str:
    f = node.func
    if isinstance(f, ast.Name):
        return f.id
    if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
        return f"{f.value.id}.{f.attr}"
    return ""


def stray_engine_makers(mods) -> list[str]:
    bad = []
    for rel, tree in mods:
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and call_name(node) in ENGINE_MAKERS:
                if rel not in ENGINE_MAKERS[call_name(node)]:
                    bad.append(f"athanor/{rel}:{node.lineno} calls {call_name(node)}")
    return sorted(bad)


def test_no_room_imports_a_room_above_it():
    assert upward_imports(modules()) == []


def test_only_the_registry_loads_models_into_engines():
    assert stray_engine_makers(modules()) == []


@pytest.mark.parametrize("rel,source,problem", [
    ("engine/scheduler.py", "from athanor.text.tokenizer import Tokenizer\n", "imports athanor.text"),
    ("engine/engine.py", "def f():\n    from athanor.runtime import llm\n", "imports athanor.runtime"),
    ("nn/quant.py", "import athanor.models.gguf\n", "imports athanor.models"),
    ("train/sft.py", "from athanor.llm.base import ToolCall\n", "imports athanor.llm"),
    ("workflow/nodes/model.py", "from athanor.serve import app\n", "imports athanor.serve"),
    ("rag/ask.py", "from athanor import engine\n", "imports athanor.engine"),
])
def test_the_import_check_catches_an_upward_import(rel, source, problem):
    (found,) = upward_imports([(rel, ast.parse(source))])
    assert problem in found


def test_the_engine_check_catches_a_second_loader():
    tree = ast.parse("def load(m):\n    return AsyncEngine(LLM.from_manifest(m, None, {}))\n")
    assert stray_engine_makers([("workflow/services.py", tree)]) == [
        "athanor/workflow/services.py:2 calls AsyncEngine", "athanor/workflow/services.py:2 calls LLM.from_manifest"]


def seam_strays(mods) -> list[str]:
    """Seams kept in one place: the ATHANOR_HOME variable is read in home.py, KEY=VALUE pairs are split in
    keyvalue.py."""
    bad = []
    for rel, tree in mods:
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value == "ATHANOR_HOME" and rel != "home.py":
                bad.append(f"athanor/{rel}:{node.lineno} reads ATHANOR_HOME")
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "partition"
                    and [getattr(a, "value", None) for a in node.args] == ["="] and rel != "keyvalue.py"):
                bad.append(f"athanor/{rel}:{node.lineno} splits KEY=VALUE")
    return sorted(bad)


def test_each_seam_lives_in_one_place():
    assert seam_strays(modules()) == []
    tree = ast.parse('import os\nhome = os.environ.get("ATHANOR_HOME")\nk, _, v = "a=b".partition("=")\n')
    assert seam_strays([("rag/kb.py", tree)]) == ["athanor/rag/kb.py:2 reads ATHANOR_HOME",
                                                  "athanor/rag/kb.py:3 splits KEY=VALUE"]
