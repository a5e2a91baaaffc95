"""The label-only LM head gives the loss and gradients transformers' own causal-LM loss gives, on packed rows."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import torch
import transformers

from athanor.train.encode import IGNORE_INDEX, Example, collate, pack_examples
from athanor.train.fast_loss import SftTrainer, label_positions, summed_cross_entropy


def _rows(vocab: int, seed: int = 0) -> list[Example]:
    rng = random.Random(seed)
    examples = []
    for n in (9, 14, 6, 11, 17, 5):
        ids = [rng.randrange(3, vocab) for _ in range(n)]
        cut = rng.randrange(2, n - 1)
        examples.append(Example(ids, [IGNORE_INDEX] * cut + ids[cut:]))
    return pack_examples(examples, 32)


def test_label_positions_select_the_tokens_before_each_label():
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 7, 8, IGNORE_INDEX], [IGNORE_INDEX, 4, IGNORE_INDEX, 5, 6]])
    keep, targets = label_positions(labels)
    assert keep.tolist() == [[False, True, True, False, False], [True, False, True, True, False]]
    assert targets.tolist() == [7, 8, 4, 5, 6]


def test_chunked_cross_entropy_equals_the_one_shot_sum():
    logits, targets = torch.randn(10, 7), torch.randint(0, 7, (10,))
    expected = torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
    assert torch.allclose(summed_cross_entropy(logits, targets, chunk=3), expected, atol=1e-5)
    assert summed_cross_entropy(logits[:0], targets[:0]).item() == 0.0


@pytest.mark.parametrize("num_items", [None, 23])
def test_loss_and_gradients_match_transformers(tiny_hf_dir, num_items):
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_hf_dir, dtype=torch.float32)
    model.config.use_cache = False
    batch = collate(_rows(model.config.vocab_size), pad_token_id=0)
    assert batch["input_ids"].shape[0] >= 2
    n_labels = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())

    model.zero_grad()
    reference = model(**batch).loss  # mean over labelled tokens
    if num_items is not None:
        reference = reference * n_labels / num_items
    reference.backward()
    ref_grads = [p.grad.clone() for p in model.parameters()]

    # compute_loss needs only the accelerator and two args fields of a real Trainer
    fake = SimpleNamespace(accelerator=SimpleNamespace(unwrap_model=lambda m: m, num_processes=1),
                           args=SimpleNamespace(average_tokens_across_devices=True))
    model.zero_grad()
    ours = SftTrainer.compute_loss(fake, model, dict(batch), num_items_in_batch=num_items)
    ours.backward()
    assert torch.allclose(ours, reference, atol=1e-5), (ours, reference)
    for p, g in zip(model.parameters(), ref_grads):
        assert torch.allclose(p.grad, g, atol=1e-5)


def test_dft_weights_each_token_loss_by_its_detached_probability():
    """LLaMA-Factory's DFT loss: sum of CE_i * p_i with p_i = exp(-CE_i) held constant in backward."""
    import torch.nn.functional as F

    from athanor.train.fast_loss import summed_cross_entropy

    torch.manual_seed(0)
    logits = torch.randn(7, 11, requires_grad=True)
    targets = torch.randint(0, 11, (7,))
    got = summed_cross_entropy(logits, targets, chunk=3, dft=True)
    ce = F.cross_entropy(logits, targets, reduction="none")
    want = (ce * torch.exp(-ce).detach()).sum()
    torch.testing.assert_close(got, want)
    (g_got,) = torch.autograd.grad(got, logits)
    (g_want,) = torch.autograd.grad(want, logits)
    torch.testing.assert_close(g_got, g_want)
    assert not torch.allclose(got, ce.sum())
