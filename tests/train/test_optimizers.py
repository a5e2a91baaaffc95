"""GaLore, APOLLO, BAdam and Adam-mini as LLaMA-Factory builds them: one optimizer step on a tiny model changes the
parameters each method says it changes, by the amount its own first-step formula gives."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from athanor.train.config import TrainConfig, check_combinations
from athanor.train.optimizers import custom_optimizer, linear_targets
from athanor.train.sft import training_arguments
from tests.nn.tiny import tiny_hf_model

LR = 1e-2


def needs(module: str) -> pytest.MarkDecorator:
    """Skip without the package (make install puts all four in; find_spec, as galore_torch's own import needs
    bitsandbytes)."""
    import importlib.util

    return pytest.mark.skipif(importlib.util.find_spec(module) is None, reason=f"{module} is not installed")


def _cfg(tmp_path, **keys) -> TrainConfig:
    base = {"model_name_or_path": "tiny", "dataset": ["d"], "finetuning_type": "full", "learning_rate": LR,
            "output_dir": str(tmp_path)}
    return TrainConfig(**{**base, **keys})


def _step(tmp_path, backward_only: bool = False, **keys) -> tuple[dict, dict, dict, torch.optim.Optimizer]:
    """(weights before, after one step, gradients) of a fresh tiny qwen2 (untied LM head) under the config."""
    cfg = _cfg(tmp_path, **keys)
    model = tiny_hf_model("qwen2", seed=0).train()
    optimizer = custom_optimizer(cfg, model, training_arguments(cfg, False))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ids = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.enable_grad():
        model(input_ids=ids, labels=ids).loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    if not backward_only:
        optimizer.step()
    return before, {n: p.detach().clone() for n, p in model.named_parameters()}, grads, optimizer


def _changed(before: dict, after: dict) -> set[str]:
    return {n for n in before if not torch.equal(before[n], after[n])}


def _adam_first_step(g: torch.Tensor) -> torch.Tensor:
    """The first update of GaLore's and APOLLO's AdamW (transformers' old AdamW: bias correction folded into the step
    size, eps not corrected) with betas (0.9, 0.999) and eps 1e-8: lr * g / (|g| + eps / sqrt(1 - beta2))."""
    return LR * g / (g.abs() + 1e-8 / 0.001**0.5)


@needs("galore_torch")
def test_galore_projects_target_weights_to_rank_r_and_leaves_the_rest_to_adamw(tmp_path):
    before, after, grads, _ = _step(tmp_path, use_galore=True, galore_rank=2, galore_target="all",
                                    weight_decay=0.0)
    assert _changed(before, after) == set(grads)
    for name in before:
        delta = after[name] - before[name]
        if "layers" in name and name.endswith("proj.weight"):  # a GaLore target: a rank-2 update
            assert torch.linalg.matrix_rank(delta).item() == 2, name
        else:  # embeddings, norms, biases and the LM head (never a target): plain AdamW
            torch.testing.assert_close(-delta, _adam_first_step(grads[name]), rtol=1e-3, atol=1e-7)
    assert torch.linalg.matrix_rank(after["lm_head.weight"] - before["lm_head.weight"]).item() > 2


@needs("galore_torch")
def test_galore_scale_and_target_are_honoured(tmp_path):
    b1, a1, _, _ = _step(tmp_path, use_galore=True, galore_rank=2, galore_scale=1.0, galore_target="q_proj")
    b2, a2, _, _ = _step(tmp_path, use_galore=True, galore_rank=2, galore_scale=3.0, galore_target="q_proj")
    q = "model.layers.0.self_attn.q_proj.weight"
    torch.testing.assert_close(a2[q] - b2[q], 3.0 * (a1[q] - b1[q]), rtol=1e-4, atol=1e-8)
    k = "model.layers.0.self_attn.k_proj.weight"  # not a target: the same AdamW step whatever the scale
    torch.testing.assert_close(a2[k] - b2[k], a1[k] - b1[k])
    assert torch.linalg.matrix_rank(a1[k] - b1[k]).item() > 2


@needs("galore_torch")
def test_layerwise_galore_steps_in_backward_and_matches_the_whole_model_optimizer(tmp_path):
    keys = {"use_galore": True, "galore_rank": 2, "weight_decay": 0.01, "gradient_accumulation_steps": 1}
    before, whole, _, _ = _step(tmp_path, **keys)
    _, during_backward, _, placeholder = _step(tmp_path, backward_only=True, galore_layerwise=True, **keys)
    assert _changed(before, during_backward) == _changed(before, whole)  # already updated when backward returns
    for name in before:
        torch.testing.assert_close(during_backward[name], whole[name], rtol=1e-5, atol=1e-7)
    placeholder.step()  # the Trainer's step is a no-op: nothing moves twice
    assert placeholder.param_groups[0]["lr"] == LR


@needs("galore_torch")
def test_layerwise_optimizer_follows_the_scheduled_learning_rate(tmp_path):
    cfg = _cfg(tmp_path, use_galore=True, galore_layerwise=True, gradient_accumulation_steps=1)
    model = tiny_hf_model("qwen2", seed=0).train()
    optimizer = custom_optimizer(cfg, model, training_arguments(cfg, False))
    optimizer.param_groups[0]["lr"] = 0.0  # what a scheduler at warm-up start sets
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ids = torch.randint(0, 256, (1, 8))
    with torch.enable_grad():
        model(input_ids=ids, labels=ids).loss.backward()
    assert not _changed(before, {n: p.detach() for n, p in model.named_parameters()})


@needs("apollo_torch")
@pytest.mark.parametrize("proj", ["random", "svd"])
def test_apollo_scales_raw_gradients_per_channel(tmp_path, proj):
    before, after, grads, _ = _step(tmp_path, use_apollo=True, apollo_rank=2, apollo_proj=proj,
                                    apollo_scale_type="channel", weight_decay=0.0)
    assert _changed(before, after) == set(grads)
    name = "model.layers.1.mlp.down_proj.weight"  # (64, 128): a full-rank update, a gradient scaled per channel
    ratio = (after[name] - before[name]) / grads[name]
    per_row, per_col = ratio.std(dim=1).max().item(), ratio.std(dim=0).max().item()
    assert min(per_row, per_col) < 1e-4 * ratio.abs().mean().item() < max(per_row, per_col)
    norm = "model.norm.weight"
    torch.testing.assert_close(after[norm] - before[norm], -_adam_first_step(grads[norm]), rtol=1e-3, atol=1e-7)


@needs("apollo_torch")
def test_apollo_tensor_scaling_and_scale(tmp_path):
    b1, a1, grads, _ = _step(tmp_path, use_apollo=True, apollo_rank=2, apollo_scale_type="tensor", apollo_scale=8.0)
    b2, a2, _, _ = _step(tmp_path, use_apollo=True, apollo_rank=2, apollo_scale_type="tensor", apollo_scale=32.0)
    # the update grows with sqrt(apollo_scale): x2 from 8 to 32
    name = "model.layers.0.mlp.up_proj.weight"
    delta, g = a1[name] - b1[name], grads[name]
    factor = (delta * g).sum() / (g * g).sum()  # one factor for the whole tensor
    torch.testing.assert_close(delta, factor * g, rtol=1e-4, atol=1e-5 * delta.abs().max().item())
    torch.testing.assert_close(a2[name] - b2[name], 2.0 * delta, rtol=1e-4, atol=1e-5 * delta.abs().max().item())


@needs("badam")
@pytest.mark.parametrize(("start", "trained"), [(None, "model.layers.0."), (1, "model.layers.1.")])
def test_badam_layer_mode_updates_one_block_only(tmp_path, start, trained):
    before, after, _, optimizer = _step(tmp_path, use_badam=True, badam_mode="layer", badam_start_block=start,
                                        badam_switch_interval=1)
    changed = _changed(before, after)
    assert changed and all(n.startswith(trained) for n in changed), changed
    assert len(changed) == sum(1 for n in before if n.startswith(trained))  # every parameter of that block
    other = "model.layers.0." if start == 1 else "model.layers.1."
    assert optimizer.active_param_prefixs == [other]  # switched to the next block after one step (interval 1)


@needs("badam")
def test_badam_ratio_mode_updates_a_share_of_each_matrix(tmp_path):
    before, after, _, _ = _step(tmp_path, use_badam=True, badam_mode="ratio", badam_update_ratio=0.1)
    q = "model.layers.0.self_attn.q_proj.weight"
    assert (after[q] != before[q]).sum().item() == int(before[q].numel() * 0.1)
    assert "model.embed_tokens.weight" not in _changed(before, after)  # LF: include_embedding=False


@needs("adam_mini")
def test_adam_mini_uses_one_second_moment_per_head_and_per_neuron(tmp_path):
    before, after, grads, _ = _step(tmp_path, use_adam_mini=True, weight_decay=0.0)
    assert _changed(before, after) == set(grads)
    q = "model.layers.0.self_attn.q_proj.weight"  # 4 query heads of 64 x 64 / 4 entries each
    g = grads[q].view(4, -1)
    want = LR * g / (g.pow(2).mean(dim=1, keepdim=True).sqrt() + 1e-8)
    torch.testing.assert_close(before[q] - after[q], want.view_as(g.new_empty(64, 64)), rtol=1e-4, atol=1e-9)
    k = "model.layers.0.self_attn.k_proj.weight"  # 2 key/value heads
    g = grads[k].view(2, -1)
    want = LR * g / (g.pow(2).mean(dim=1, keepdim=True).sqrt() + 1e-8)
    torch.testing.assert_close(before[k] - after[k], want.view(32, 64), rtol=1e-4, atol=1e-9)
    v = "model.layers.1.self_attn.v_proj.weight"  # one per output neuron (row)
    g = grads[v]
    torch.testing.assert_close(before[v] - after[v], LR * g / (g.pow(2).mean(dim=1, keepdim=True).sqrt() + 1e-8),
                               rtol=1e-4, atol=1e-9)


def test_all_means_every_linear_layer_but_the_lm_head():
    model = tiny_hf_model("qwen2")
    assert linear_targets(model, "all") == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj",
                                            "v_proj"]
    assert linear_targets(model, ["q_proj"]) == ["q_proj"]


@pytest.mark.parametrize(("keys", "words"), [
    ({"use_galore": True, "finetuning_type": "lora"}, "use_galore: cannot be used with finetuning_type: lora"),
    ({"use_badam": True, "use_apollo": True}, "use_apollo and use_badam: GaLore, APOLLO and BAdam cannot"),
    ({"use_galore": True, "galore_layerwise": True, "gradient_accumulation_steps": 8},
     "galore_layerwise: steps each parameter during backward, so it needs gradient_accumulation_steps: 1"),
    ({"use_apollo": True, "optim": "sgd"}, "use_apollo with optim: sgd: APOLLO is an AdamW"),
    ({"use_galore": True, "optim": "rmsprop"}, "use_galore with optim: rmsprop: GaLore has adamw_torch and adafactor"),
    ({"use_badam": True, "finetuning_type": "freeze"}, "use_badam: BAdam chooses the trainable block itself"),
    ({"use_adam_mini": True, "finetuning_type": "lora"}, "use_adam_mini: Adam-mini partitions whole weight"),
    ({"use_badam": True, "badam_switch_interval": 0}, "badam_switch_interval: -1 (never switch) or a number"),
])
def test_combinations_llama_factory_refuses_are_refused(tmp_path, keys, words):
    problems = check_combinations(_cfg(tmp_path, **keys), has_cuda=False)
    assert any(p.startswith(words) for p in problems), problems


def test_a_missing_package_is_named(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "badam" else real(name, *a))
    problems = check_combinations(_cfg(tmp_path, use_badam=True), has_cuda=False)
    assert "use_badam: needs the badam package: pip install badam (or athanor[optimizers])" in problems


@needs("galore_torch")
def test_check_names_the_optimizer(tmp_path, tiny_hf_dir):
    import yaml

    from athanor.train.check import check_run
    from tests.train.test_lf_configs import write_lf_data_dir

    data = write_lf_data_dir(tmp_path)
    (data / "cfg.yaml").write_text(yaml.safe_dump({
        "model_name_or_path": str(tiny_hf_dir), "stage": "sft", "dataset": "identity", "finetuning_type": "full",
        "use_galore": True, "galore_layerwise": True, "galore_rank": 8, "template": "qwen3_nothink"}))
    lines: list[str] = []
    check_run(data / "cfg.yaml", echo=lines.append)
    assert "method: full, GaLore adamw_torch rank 8 every 200 steps, scale 2, std, layer-wise" in lines, lines
