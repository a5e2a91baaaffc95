"""The 2-process parity of test_accelerate_two_processes.py on the real built-in model (SmolLM2-135M from its Q4_1
GGUF, trained in float32): `accelerate launch --num_processes 2` (gloo, per-device batch 2) against one process
with per-device batch 4, a LoRA fine-tune, the same loss at every step to float rounding. Two launches: about two
minutes on 2 shared cores (marked slow). The full fine-tune's 2-process parity (and resuming across process
counts) is tested on the tiny model in test_accelerate_two_processes.py; on SmolLM2 it took another ~2.5 minutes
of the suite's 25 (each process loads the model and writes a 540 MB float32 result).
"""

from __future__ import annotations

import pytest

from tests.train.test_accelerate_two_processes import MAX_STEPS, _losses, _run, _write_data

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("finetuning", ["lora"])
def test_smollm2_two_processes_match_one(smollm2_path, tmp_path, finetuning):
    _write_data(tmp_path)
    one = _run(tmp_path, smollm2_path, "one", 1, finetuning, port=29541, checkpoints=False)
    two = _run(tmp_path, smollm2_path, "two", 2, finetuning, port=29542, checkpoints=False)
    ref, par = _losses(one), _losses(two)
    assert sorted(ref) == sorted(par) == list(range(1, MAX_STEPS + 1))
    assert [par[s] for s in ref] == pytest.approx([ref[s] for s in ref], rel=1e-4, abs=1e-4)
    assert len(set(ref.values())) > 1  # the curve moves
    print(f"smollm2 {finetuning}: 1 process {[round(ref[s], 6) for s in sorted(ref)]}, "
          f"2 processes {[round(par[s], 6) for s in sorted(par)]}")
