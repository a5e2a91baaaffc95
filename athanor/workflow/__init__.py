"""Workflows: run Dify's exported app DSL (workflow and advanced-chat apps) unchanged, with local models.

Public API (imported lazily so `import athanor.workflow` stays cheap): load_app, dump_app, validate_app,
run_workflow, WorkflowEngine. Not for: the model nodes' prompting (nodes/model.py, prompting.py).
"""

from __future__ import annotations

import importlib

_EXPORTS = {"load_app": "dsl", "dump_app": "dsl", "App": "dsl", "validate_app": "validate",
            "run_workflow": "engine", "WorkflowEngine": "engine", "VariablePool": "pool"}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"athanor.workflow.{_EXPORTS[name]}"), name)
    raise AttributeError(name)
