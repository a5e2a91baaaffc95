"""Preference training: only the final reply is scored, the losses match their formulas, and a real run on the
tiny model raises the preference for chosen over rejected replies."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from athanor.data.formats import PreferencePair
from athanor.text.tokenizer import Tokenizer
from athanor.train.config import load_config
from athanor.train.dpo import encode_pair, preference_loss, run_dpo, sequence_logps
from athanor.train.encode import IGNORE_INDEX

PAIRS = [
    {"instruction": "capital of France?", "chosen": "Paris.", "rejected": "hello world"},
    {"instruction": "hello", "chosen": "hello, how are you?", "rejected": "The capital."},
    {"instruction": "12345", "chosen": "数字 12345", "rejected": "France"},
    {"instruction": "how are you?", "chosen": "world, too", "rejected": "emoji 🙂"},
]


@pytest.fixture(scope="module")
def tok(tiny_hf_dir) -> Tokenizer:
    return Tokenizer.from_hf_dir(tiny_hf_dir)


def test_only_the_final_reply_is_scored(tok):
    pair = PreferencePair(prompt=[{"role": "user", "content": "hello"}, {"role": "assistant", "content": "world"},
                                  {"role": "user", "content": "how are you?"}],
                          chosen={"role": "assistant", "content": "fine"},
                          rejected={"role": "assistant", "content": "Paris"})
    chosen, rejected = encode_pair(tok, pair)
    for ex, reply in ((chosen, "fine"), (rejected, "Paris")):
        scored = [t for t, lab in zip(ex.input_ids, ex.labels) if lab != IGNORE_INDEX]
        assert tok.decode(scored, skip_special_tokens=False) == reply + "<|im_end|>"


def test_sequence_logps_sums_the_labelled_next_token_log_probs():
    logits = torch.randn(1, 4, 5)  # (N, T, V)
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 3, 1]])
    logps, counts = sequence_logps(logits, labels)
    want = logits[0, 1].log_softmax(-1)[3] + logits[0, 2].log_softmax(-1)[1]
    torch.testing.assert_close(logps[0], want)
    assert counts.tolist() == [2]


def test_losses_match_their_formulas():
    c, r, n = torch.tensor([-4.0]), torch.tensor([-6.0]), torch.tensor([2.0])
    rc, rr = torch.tensor([-5.0]), torch.tensor([-5.0])
    # DPO: -log sigmoid(beta * ((c - rc) - (r - rr))) = -log sigmoid(0.1 * 2)
    assert preference_loss("sigmoid", 0.1, c, r, n, n, rc, rr).item() == pytest.approx(
        -math.log(1 / (1 + math.exp(-0.2))))
    # IPO on per-token log-ratios: ((0.5 - -0.5) - 1/(2*0.1))^2 = (1 - 5)^2
    assert preference_loss("ipo", 0.1, c, r, n, n, rc, rr).item() == pytest.approx(16.0)
    # SimPO: -log sigmoid(beta * (-2 - -3) - 0.5)
    assert preference_loss("simpo", 2.0, c, r, n, n).item() == pytest.approx(-math.log(1 / (1 + math.exp(-1.5))))
    odds = (-2 + 3) - (math.log1p(-math.exp(-2)) - math.log1p(-math.exp(-3)))
    assert preference_loss("orpo", 0.1, c, r, n, n).item() == pytest.approx(
        2 - 0.1 * math.log(1 / (1 + math.exp(-odds))), rel=1e-5)


def _config(tmp_path: Path, tiny_hf_dir: Path, **keys):
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps(p) for p in PAIRS))
    if keys.get("finetuning_type", "lora") == "lora":
        keys = {"lora_target": "q_proj,v_proj,lm_head", **keys}
    (tmp_path / "dpo.yaml").write_text(yaml.safe_dump({
        "model_name_or_path": str(tiny_hf_dir), "stage": "dpo", "dataset": "pairs.jsonl",
        "output_dir": str(tmp_path / "out"), "per_device_train_batch_size": 4,
        "learning_rate": 5e-3, "max_steps": 2, "logging_steps": 1, "save_steps": 100, "seed": 0, **keys}))
    return load_config(tmp_path / "dpo.yaml", has_cuda=False)


def _preference_accuracy(model, tok) -> float:
    from athanor.train.dpo import collate_pairs

    batch = collate_pairs([encode_pair(tok, PreferencePair([{"role": "user", "content": p["instruction"]}],
                                                           {"role": "assistant", "content": p["chosen"]},
                                                           {"role": "assistant", "content": p["rejected"]}))
                           for p in PAIRS], 0)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
    logps, counts = sequence_logps(logits, batch["labels"])
    avg = logps / counts
    return (avg[: len(PAIRS)] > avg[len(PAIRS):]).float().mean().item()


def test_dpo_run_raises_preference_accuracy(tmp_path, tiny_hf_dir, tok):
    import transformers
    from peft import PeftModel

    out = run_dpo(_config(tmp_path, tiny_hf_dir, max_steps=30, pref_beta=0.5), echo=lambda _: None)
    base = transformers.AutoModelForCausalLM.from_pretrained(tiny_hf_dir, dtype=torch.float32).eval()
    before = _preference_accuracy(base, tok)
    after = _preference_accuracy(PeftModel.from_pretrained(base, out).eval(), tok)
    assert before < 1.0 and after == 1.0, (before, after)
    rows = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert losses[0] == pytest.approx(math.log(2), abs=1e-3)  # policy == reference at step 1
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("keys", [{"pref_loss": "ipo"}, {"pref_loss": "orpo"}, {"pref_loss": "simpo"},
                                  {"finetuning_type": "full"}], ids=["ipo", "orpo", "simpo", "full-sigmoid"])
def test_every_loss_and_a_reference_copy_train(tmp_path, tiny_hf_dir, keys):
    out = run_dpo(_config(tmp_path, tiny_hf_dir, **keys), echo=lambda _: None)
    losses = [json.loads(line)["loss"] for line in (out / "trainer_log.jsonl").read_text().splitlines()
              if '"loss"' in line]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    # At step 1 the policy equals its reference (LoRA off / the frozen copy): the margin is 0.
    first = {"ipo": (1 / (2 * 0.1)) ** 2, "sigmoid": math.log(2)}.get(keys.get("pref_loss", "sigmoid"))
    if first is not None:
        assert losses[0] == pytest.approx(first, rel=1e-4)


def test_held_out_rewards_are_logged_and_match_a_recomputation(tmp_path, tiny_hf_dir, tok):
    """val_size holds pairs out; the final eval_rewards/* in trainer_log.jsonl equal beta x (policy - reference)
    log-probs recomputed from the saved adapter and the base."""
    import transformers
    from peft import PeftModel

    from athanor.train.dpo import collate_pairs
    from athanor.train.sft import _split

    beta = 0.5
    out = run_dpo(_config(tmp_path, tiny_hf_dir, max_steps=4, pref_beta=beta, val_size=2, save_steps=2),
                  echo=lambda _: None)
    rows = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval_rewards/accuracies" in r]
    assert len(evals) >= 2  # at save_steps and at the end
    final = evals[-1]
    _, held = _split(PAIRS, 2, 0)
    batch = collate_pairs([encode_pair(tok, PreferencePair([{"role": "user", "content": p["instruction"]}],
                                                           {"role": "assistant", "content": p["chosen"]},
                                                           {"role": "assistant", "content": p["rejected"]}))
                           for p in held], 0)
    base = transformers.AutoModelForCausalLM.from_pretrained(tiny_hf_dir, dtype=torch.float32).eval()
    kwargs = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"], "use_cache": False}
    with torch.no_grad():
        ref = sequence_logps(base(**kwargs).logits, batch["labels"])[0]
        policy = sequence_logps(PeftModel.from_pretrained(base, out).eval()(**kwargs).logits, batch["labels"])[0]
    rewards = beta * (policy - ref)
    chosen, rejected = rewards[:2], rewards[2:]
    assert final["eval_rewards/chosen"] == pytest.approx(chosen.mean().item(), abs=1e-4)
    assert final["eval_rewards/rejected"] == pytest.approx(rejected.mean().item(), abs=1e-4)
    assert final["eval_rewards/margins"] == pytest.approx((chosen - rejected).mean().item(), abs=1e-4)
    assert final["eval_rewards/accuracies"] == pytest.approx((chosen > rejected).float().mean().item())


def test_eval_dataset_is_the_held_out_set(tmp_path, tiny_hf_dir, tok):
    from athanor.train.dpo import split_pairs

    held = [{"instruction": "hello world", "chosen": "Paris.", "rejected": "France"}]
    (tmp_path / "held.jsonl").write_text(json.dumps(held[0]))
    train, held_out = split_pairs(_config(tmp_path, tiny_hf_dir, eval_dataset="held.jsonl"), tok, echo=lambda _: None)
    assert len(train) == len(PAIRS) and len(held_out) == 1
    want = encode_pair(tok, PreferencePair([{"role": "user", "content": "hello world"}],
                                           {"role": "assistant", "content": "Paris."},
                                           {"role": "assistant", "content": "France"}))
    assert [ex.input_ids for ex in held_out[0]] == [ex.input_ids for ex in want]
