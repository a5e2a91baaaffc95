"""Packed attention (attention per sample of a packed row) gives the numbers transformers' masked sdpa path gives:
the same logits as each sample alone, the same loss and gradients, on every architecture sft trains."""

from __future__ import annotations

import random

import pytest
import torch

from athanor.errors import AthanorError
from athanor.train.encode import IGNORE_INDEX, Example, collate, pack_examples
from athanor.train.packed_attention import NAME, sample_bounds, supports_packed_attention, use_packed_attention
from tests.nn.tiny import tiny_hf_model


def _samples(vocab: int, lengths=(9, 14, 6, 11, 17, 5, 8), seed: int = 0) -> list[Example]:
    rng = random.Random(seed)
    out = []
    for n in lengths:
        ids = [rng.randrange(3, vocab) for _ in range(n)]
        cut = rng.randrange(1, n - 1)
        out.append(Example(ids, [IGNORE_INDEX] * cut + ids[cut:]))
    return out


def _pair(arch: str):
    """Two copies of one tiny model: transformers' sdpa (masked) and ours (packed attention)."""
    reference = tiny_hf_model(arch, seed=1).float()
    ours = tiny_hf_model(arch, seed=1).float()
    for m in (reference, ours):
        m.config.use_cache = False
    assert use_packed_attention(ours) and ours.config._attn_implementation == NAME
    assert reference.config._attn_implementation != NAME
    return reference, ours


def test_sample_bounds_split_where_positions_restart():
    assert sample_bounds(torch.tensor([0, 1, 2, 0, 1, 0, 1, 2, 3])) == [0, 3, 5, 9]
    assert sample_bounds(torch.tensor([0, 1, 2])) == [0, 3]


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3"])
def test_packed_rows_match_each_sample_alone(arch):
    reference, ours = _pair(arch)
    samples = _samples(reference.config.vocab_size)
    rows = pack_examples(samples, 24)
    assert len(rows) >= 3 and any(len(r.input_ids) < 24 for r in rows)  # several rows, some padded
    batch = collate(rows, pad_token_id=0)
    with torch.no_grad():
        packed = ours(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
        masked = reference(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
        for b, row in enumerate(rows):
            bounds = sample_bounds(torch.tensor(row.position_ids))
            for s, e in zip(bounds, bounds[1:]):
                alone = reference(input_ids=batch["input_ids"][b:b + 1, s:e]).logits[0]
                torch.testing.assert_close(packed[b, s:e], alone, atol=1e-5, rtol=1e-4)
        n = [len(r.input_ids) for r in rows]
        for b in range(len(rows)):  # and transformers' masked path on the same packed batch (real tokens)
            torch.testing.assert_close(packed[b, :n[b]], masked[b, :n[b]], atol=1e-5, rtol=1e-4)


def test_same_loss_and_gradients_as_the_masked_path():
    reference, ours = _pair("llama")
    batch = collate(pack_examples(_samples(reference.config.vocab_size, seed=3), 32), pad_token_id=0)
    grads = []
    for model in (reference, ours):
        model.zero_grad()
        loss = model(**batch).loss
        loss.backward()
        grads.append((loss.item(), [p.grad.clone() for p in model.parameters()]))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-5)
    for a, b in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_without_position_ids_it_is_plain_causal_attention():
    reference, ours = _pair("qwen2")
    ids = torch.randint(3, reference.config.vocab_size, (2, 13))
    with torch.no_grad():
        torch.testing.assert_close(ours(input_ids=ids).logits, reference(input_ids=ids).logits, atol=1e-5, rtol=1e-4)


def test_a_padding_mask_is_refused_not_ignored():
    _, ours = _pair("llama")
    ids = torch.randint(3, ours.config.vocab_size, (2, 6))
    mask = torch.ones_like(ids)
    mask[1, :2] = 0  # left padding: would be silently wrong without a mask
    with pytest.raises(AthanorError, match="no attention_mask"):
        ours(input_ids=ids, attention_mask=mask)
    ours(input_ids=ids, attention_mask=torch.ones_like(ids))  # an all-ones mask masks nothing: fine


def test_windowed_or_soft_capped_attention_keeps_transformers_attention():
    import transformers

    assert supports_packed_attention(transformers.Qwen2Config(use_sliding_window=False))
    assert not supports_packed_attention(transformers.MistralConfig(sliding_window=4096))
    assert not supports_packed_attention(transformers.Gemma2Config())
    mistral = tiny_hf_model("mistral")  # sliding_window=None: full attention, so packed attention applies
    assert use_packed_attention(mistral)


def test_sft_trains_with_packed_attention(tiny_hf_dir, tmp_path):
    """The model athanor train builds uses it, and a full fine-tune's saved config does not name it."""
    import json

    from athanor.train.config import TrainConfig
    from athanor.train.sft import load_model

    cfg = TrainConfig(model_name_or_path=str(tiny_hf_dir), dataset=["x.jsonl"], finetuning_type="full",
                      output_dir=str(tmp_path))
    model = load_model(cfg, tiny_hf_dir, None, packed_attention=True)
    assert model.config._attn_implementation == NAME
    model.save_pretrained(tmp_path / "saved")
    assert NAME not in (tmp_path / "saved" / "config.json").read_text()
    assert json.loads((tmp_path / "saved" / "config.json").read_text())["model_type"] == "qwen2"
