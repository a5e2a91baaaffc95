"""Resuming picks the last whole checkpoint: folders a killed run half-wrote are named and skipped (issue 14).
The folders are written the way transformers' Trainer writes them (safetensors weights, trainer_state.json)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from athanor.errors import AthanorError
from athanor.train.checkpoints import check_resume_folder, checkpoint_problem, last_whole_checkpoint


def _checkpoint(out, step: int):
    folder = out / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    save_file({"w": torch.ones(64, 64)}, folder / "adapter_model.safetensors")
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return folder


def test_half_written_newest_is_skipped_with_a_message(tmp_path):
    _checkpoint(tmp_path, 4)
    no_state = _checkpoint(tmp_path, 8)
    (no_state / "trainer_state.json").unlink()  # killed before the Trainer wrote its state (written last)
    cut = _checkpoint(tmp_path, 12)
    weights = cut / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    said: list[str] = []
    assert last_whole_checkpoint(tmp_path, said.append).name == "checkpoint-4"
    assert said == [
        "skipping checkpoint-12: incomplete, adapter_model.safetensors is truncated (tensor data runs past the end)",
        "skipping checkpoint-8: incomplete, no trainer_state.json (the run stopped while saving it)",
    ]


def test_numeric_order_not_text_order(tmp_path):
    _checkpoint(tmp_path, 9)
    _checkpoint(tmp_path, 10)
    assert last_whole_checkpoint(tmp_path, lambda _: None).name == "checkpoint-10"


def test_a_named_broken_checkpoint_is_one_line_with_the_alternative(tmp_path):
    _checkpoint(tmp_path, 4)
    broken = _checkpoint(tmp_path, 8)
    (broken / "trainer_state.json").write_text('{"global_st')
    assert checkpoint_problem(broken) == "trainer_state.json is cut short or unreadable"
    with pytest.raises(AthanorError) as e:
        check_resume_folder(broken)
    assert "incomplete" in str(e.value) and "checkpoint-4" in str(e.value) and "\n" not in str(e.value)


def test_all_broken_is_a_clear_error(tmp_path):
    (_checkpoint(tmp_path, 2) / "adapter_model.safetensors").unlink()
    with pytest.raises(AthanorError, match="every checkpoint .* is incomplete"):
        last_whole_checkpoint(tmp_path, lambda _: None)
