"""LLaMA-Factory's extra methods: Muon (against the Newton-Schulz formula), LLaMA Pro (expansion keeps the logits,
only the expanded blocks train), the EAFT and ASFT losses (against hand-computed numbers), and the combinations
each one refuses. One-step runs on the tiny model here; on SmolLM2 in test_lf_runs-style slow tests below."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from athanor.train.config import ConfigError, load_config
from tests.train.test_lf_configs import COMMON, DATA, FULL, LORA, SFT, write_lf_data_dir
from tests.train.test_lf_runs import _run


@pytest.fixture
def lf_dir(tmp_path) -> Path:
    return write_lf_data_dir(tmp_path)


def _problems(dir: Path, model: Path, keys: dict) -> list[str]:
    path = dir / "config.yaml"
    path.write_text(yaml.safe_dump({"model_name_or_path": str(model), **COMMON, **keys}, sort_keys=False))
    with pytest.raises(ConfigError) as info:
        load_config(path, has_cuda=False)
    assert all("\n" not in p for p in info.value.problems)
    return info.value.problems


# ------------------------------------------------------------------------------------------------ Muon


def _newton_schulz_reference(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """The quintic Newton-Schulz orthogonalisation of Muon (Keller Jordan; LF's third_party/muon), in float64."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.double()
    tall = x.shape[0] > x.shape[1]
    x = x.T if tall else x
    x = x / (x.norm() + 1e-7)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.T if tall else x).float()


@pytest.mark.parametrize("shape", [(6, 4), (64, 32), (32, 96)])
def test_muon_step_matches_the_reference_formula(shape):
    """First step: W <- W (1 - lr wd) - lr 0.2 sqrt(max(A, B)) NS5(g + 0.95 g) (Nesterov on a fresh buffer);
    torch's Muon runs NS in bfloat16, so the update agrees to bfloat16 precision, not bit for bit."""
    from athanor.train.muon import MuonWithAdamW

    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(*shape))
    w0 = w.detach().clone()
    grad = torch.randn(*shape)
    w.grad = grad.clone()
    lr, wd = 0.01, 0.1
    MuonWithAdamW([w], [], lr=lr, weight_decay=wd, betas=(0.9, 0.999), eps=1e-8).step()
    want = -lr * 0.2 * math.sqrt(max(shape)) * _newton_schulz_reference(grad * 1.95)
    got = w.detach() - w0 * (1 - lr * wd)
    assert ((got - want).norm() / want.norm()).item() < 0.05
    assert torch.nn.functional.cosine_similarity(got.flatten(), want.flatten(), dim=0).item() > 0.999


def test_muon_splits_parameters_as_llama_factory_and_adamw_half_is_adamw(tiny_hf_dir):
    import transformers

    from athanor.train.muon import is_muon_param, muon_optimizer

    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_hf_dir)
    cfg = load_config_like(learning_rate=1e-3, weight_decay=0.01)
    opt = muon_optimizer(cfg, model)
    names = {n for n, p in model.named_parameters() if is_muon_param(n, p)}
    assert names and all(".layers." in n and ("proj" in n) for n in names)
    assert not any("embed" in n or "norm" in n or n.endswith(".bias") for n in names)
    assert opt.muon_count == len(names)
    # The AdamW half steps exactly like torch.optim.AdamW with the same settings.
    bias = next(p for n, p in model.named_parameters() if n.endswith(".bias"))
    twin = torch.nn.Parameter(bias.detach().clone())
    reference = torch.optim.AdamW([twin], lr=1e-3, weight_decay=0.01, betas=(0.9, 0.999), eps=1e-8)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    twin.grad = torch.ones_like(twin)
    opt.step()
    reference.step()
    torch.testing.assert_close(bias.detach(), twin.detach())
    # The schedule reaches both halves; the state round-trips (checkpoint resume).
    for group in opt.param_groups:
        group["lr"] = 5e-4
    assert {g["lr"] for o in opt.inner for g in o.param_groups} == {5e-4}
    fresh = muon_optimizer(cfg, model)
    fresh.load_state_dict(opt.state_dict())
    assert len(fresh.param_groups) == 2 and fresh.inner[0].state


def load_config_like(**keys):
    class Cfg:
        learning_rate, weight_decay, adam_beta1, adam_beta2, adam_epsilon = 1e-4, 0.0, 0.9, 0.999, 1e-8

    cfg = Cfg()
    for k, v in keys.items():
        setattr(cfg, k, v)
    return cfg


def test_muon_one_step_full_and_lora(lf_dir, tiny_hf_dir):
    out, _ = _run(lf_dir, tiny_hf_dir, {**FULL, "use_muon": True})
    assert (out / "config.json").is_file()
    out.rename(lf_dir / "full")
    out, _ = _run(lf_dir, tiny_hf_dir, {**SFT, "use_muon": True})
    assert (out / "adapter_config.json").is_file()


def test_muon_refusals(lf_dir, tiny_hf_dir):
    problems = _problems(lf_dir, tiny_hf_dir, {**SFT, "use_muon": True, "loraplus_lr_ratio": 16.0})
    assert "use_muon and loraplus_lr_ratio both pick the optimizer; pick one" in problems
    problems = _problems(lf_dir, tiny_hf_dir, {**FULL, "use_muon": True, "optim": "sgd"})
    assert problems == ["use_muon replaces the optimizer (Muon + AdamW); optim: sgd would be ignored, drop it"]
    problems = _problems(lf_dir, tiny_hf_dir, {"stage": "rm", **LORA, "dataset": "dpo_en_demo", "use_muon": True})
    assert problems == ["use_muon: Muon is wired into stages sft, pt, dpo and grpo here (got rm)"]


# ------------------------------------------------------------------------------------------------ LLaMA Pro


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_llama_pro_expansion_keeps_the_logits_and_layout(tiny_hf_dir):
    import transformers

    from athanor.train.llama_pro import expand_blocks, expanded_layer_ids

    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_hf_dir)
    n = model.config.num_hidden_layers
    ids = torch.randint(0, model.config.vocab_size, (2, 12))
    before = _logits(model, ids)
    originals = list(model.model.layers)
    expand_blocks(model, n)  # one copy after every block
    assert model.config.num_hidden_layers == 2 * n == len(model.model.layers)
    assert expanded_layer_ids(2 * n, n) == list(range(1, 2 * n, 2))
    assert [model.model.layers[i] for i in range(0, 2 * n, 2)] == originals
    copy = model.model.layers[1]
    assert copy.self_attn.o_proj.weight.abs().sum() == 0 and copy.mlp.down_proj.weight.abs().sum() == 0
    torch.testing.assert_close(copy.self_attn.q_proj.weight, originals[0].self_attn.q_proj.weight)
    assert [layer.self_attn.layer_idx for layer in model.model.layers] == list(range(2 * n))
    torch.testing.assert_close(_logits(model, ids), before, rtol=0, atol=1e-6)


def test_llama_pro_command_then_freeze_training_moves_only_expanded_blocks(lf_dir, tiny_hf_dir):
    import transformers
    from safetensors.torch import load_file
    from typer.testing import CliRunner

    from athanor.cli import app

    expanded = lf_dir / "tiny-pro"
    n = transformers.AutoConfig.from_pretrained(tiny_hf_dir).num_hidden_layers
    result = CliRunner().invoke(app, ["llama-pro", str(tiny_hf_dir), "--out", str(expanded), "--num-expand", str(n)])
    assert result.exit_code == 0, result.output
    assert "use_llama_pro: true" in result.output and (expanded / "tokenizer.json").is_file()
    original = transformers.AutoModelForCausalLM.from_pretrained(tiny_hf_dir)
    pro = transformers.AutoModelForCausalLM.from_pretrained(expanded)
    ids = torch.randint(0, original.config.vocab_size, (1, 10))
    torch.testing.assert_close(_logits(pro, ids), _logits(original, ids), rtol=0, atol=1e-6)

    keys = {**DATA, "finetuning_type": "freeze", "freeze_trainable_layers": n, "use_llama_pro": True,
            "learning_rate": 1e-2, "lr_scheduler_type": "constant", "warmup_ratio": 0.0}
    out, _ = _run(lf_dir, expanded, keys)
    trained = load_file(out / "model.safetensors")
    start = load_file(expanded / "model.safetensors")
    moved = {k.split(".layers.")[1].split(".")[0] for k in start if ".layers." in k
             and not torch.equal(start[k], trained[k])}
    assert moved == {str(i) for i in range(1, 2 * n, 2)}, moved  # only the expanded blocks changed
    still = [k for k in start if ".layers." not in k]
    assert all(torch.equal(start[k], trained[k]) for k in still)
    # a freeze_trainable_layers that divides the layer count but is not the expansion would train original blocks
    from athanor.errors import AthanorError

    with pytest.raises(AthanorError, match=f"this model was expanded by {n} blocks.*set freeze_trainable_layers: {n}"):
        _run(lf_dir, expanded, {**keys, "freeze_trainable_layers": 2 * n})


def test_llama_pro_with_lora_targets_only_expanded_blocks(lf_dir, tiny_hf_dir):
    import transformers

    from athanor.train.llama_pro import expand_blocks

    n = transformers.AutoConfig.from_pretrained(tiny_hf_dir).num_hidden_layers
    model = expand_blocks(transformers.AutoModelForCausalLM.from_pretrained(tiny_hf_dir), n)
    expanded = lf_dir / "pro"
    model.save_pretrained(expanded)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (expanded / name).write_bytes((tiny_hf_dir / name).read_bytes())
    out, _ = _run(lf_dir, expanded, {**SFT, "use_llama_pro": True, "freeze_trainable_layers": n})
    adapter = json.loads((out / "adapter_config.json").read_text())
    targets = adapter["target_modules"]
    layers = {t.split(".layers.")[1].split(".")[0] for t in targets}
    assert layers == {str(i) for i in range(1, 2 * n, 2)}, targets


def test_llama_pro_refusals(lf_dir, tiny_hf_dir):
    problems = _problems(lf_dir, tiny_hf_dir, {**FULL, "use_llama_pro": True})
    assert problems == [("use_llama_pro: trains the expanded blocks with finetuning_type freeze or lora (got full), "
                         "as in LLaMA-Factory")]
    from athanor.errors import AthanorError
    from athanor.train.llama_pro import expanded_layer_ids

    with pytest.raises(AthanorError, match="layers are not divisible by freeze_trainable_layers=3"):
        expanded_layer_ids(4, 3)


# ------------------------------------------------------------------------------------------------ EAFT / ASFT


def _softmax(row: list[float]) -> list[float]:
    z = sum(math.exp(v) for v in row)
    return [math.exp(v) / z for v in row]


def test_eaft_weight_on_a_hand_computed_example():
    """Two positions over a 3-token vocabulary (top-20 = all 3): loss_i = -log p_i[target], weight = (H_i / 3) ** a."""
    from athanor.train.fast_loss import summed_cross_entropy
    from athanor.train.sft_losses import eaft_weight

    rows, targets, alpha = [[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]], [0, 1], 0.5
    want = 0.0
    for row, t in zip(rows, targets):
        p = _softmax(row)
        entropy = -sum(q * math.log(q) for q in p)
        want += -math.log(p[t]) * (entropy / 3.0) ** alpha
    logits = torch.tensor(rows, requires_grad=True)
    got = summed_cross_entropy(logits, torch.tensor(targets), weight=eaft_weight(alpha))
    assert got.item() == pytest.approx(want, rel=1e-6)
    # The weight is held constant: the gradient is the weighted cross-entropy's.
    (grad,) = torch.autograd.grad(got, logits)
    p = torch.softmax(logits.detach(), -1)
    w = torch.tensor([(-(q * q.log()).sum().item() / 3.0) ** alpha for q in p])
    onehot = torch.nn.functional.one_hot(torch.tensor(targets), 3).float()
    torch.testing.assert_close(grad, w[:, None] * (p - onehot))


def test_eaft_entropy_uses_only_the_top_20_logits():
    from athanor.train.sft_losses import eaft_weight

    row = torch.arange(30, dtype=torch.float32)[None] / 4  # 30 tokens; the 10 smallest must not count
    top = row[0, 10:]
    p = torch.softmax(top, -1)
    want = ((-(p * p.log()).sum()) / 3.0) ** 1.0
    torch.testing.assert_close(eaft_weight(1.0)(row, torch.zeros(1))[0], want)


def test_asft_is_dft_plus_alpha_kl_to_the_reference_on_a_hand_computed_example():
    from athanor.train.fast_loss import summed_cross_entropy
    from athanor.train.sft_losses import dft_weight, summed_kl

    policy, ref, target, alpha = [1.0, 0.0, -1.0], [0.0, 0.5, 0.0], 1, 0.1
    p, q = _softmax(policy), _softmax(ref)
    dft = -math.log(p[target]) * p[target]
    kl = sum(qi * (math.log(qi) - math.log(pi)) for pi, qi in zip(p, q))
    logits = torch.tensor([policy])
    got = summed_cross_entropy(logits, torch.tensor([target]), weight=dft_weight) + alpha * summed_kl(
        logits, torch.tensor([ref]))
    assert got.item() == pytest.approx(dft + alpha * kl, rel=1e-6)
    assert summed_kl(logits, logits).item() == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("method", [FULL, SFT], ids=["full", "lora"])
def test_asft_is_dft_at_the_start_then_the_kl_anchor_counts(lf_dir, tiny_hf_dir, method):
    """At step one the policy is the reference (a frozen copy, or the base with the adapter off), so KL = 0 and
    ASFT's loss is exactly DFT's; once the weights moved, the KL term makes the second step's loss differ."""
    two_steps = ["max_steps=2", "learning_rate=0.05", "lr_scheduler_type=constant", "warmup_ratio=0.0"]

    def losses(keys: dict, name: str) -> list[float]:
        out, _ = _run(lf_dir, tiny_hf_dir, {**method, **keys}, two_steps)
        got = [r["loss"] for r in map(json.loads, (out / "trainer_log.jsonl").read_text().splitlines()) if "loss" in r]
        out.rename(lf_dir / name)
        return got

    dft = losses({"use_dft_loss": True}, "dft")
    asft = losses({"use_asft_loss": True, "asft_alpha": 5.0}, "asft")
    assert asft[0] == pytest.approx(dft[0], rel=1e-5)
    assert asft[1] > dft[1] * 1.001, (dft, asft)  # KL >= 0, and > 0 once the model moved


def test_eaft_one_step_differs_from_plain_sft(lf_dir, tiny_hf_dir):
    plain_out, _ = _run(lf_dir, tiny_hf_dir, FULL)
    plain = json.loads((plain_out / "trainer_log.jsonl").read_text().splitlines()[0])["loss"]
    plain_out.rename(lf_dir / "plain")
    out, _ = _run(lf_dir, tiny_hf_dir, {**FULL, "use_eaft_loss": True, "eaft_alpha": 1.0})
    eaft = json.loads((out / "trainer_log.jsonl").read_text().splitlines()[0])["loss"]
    assert math.isfinite(eaft) and eaft != pytest.approx(plain, rel=1e-3)


def test_loss_refusals(lf_dir, tiny_hf_dir):
    problems = _problems(lf_dir, tiny_hf_dir, {**FULL, "use_eaft_loss": True, "use_dft_loss": True})
    assert problems == ["use_dft_loss and use_eaft_loss are all set; each replaces the SFT loss, pick one"]
    problems = _problems(lf_dir, tiny_hf_dir, {"stage": "pt", **LORA, "dataset": "c4_demo", "use_asft_loss": True})
    assert "use_asft_loss: the ASFT loss applies to stage: sft (got pt)" in problems


# ------------------------------------------------------------------------------------------------ MoD


def test_mixture_of_depths_is_refused_naming_the_package(lf_dir, tiny_hf_dir):
    for value in ("convert", "load"):
        [problem] = _problems(lf_dir, tiny_hf_dir, {**FULL, "mixture_of_depths": value})
        assert problem.startswith("mixture_of_depths: LLaMA-Factory runs it on the MoD package (pip: mixture-of-depth)")
        assert "transformers 5" in problem and problem.endswith(f"(got {value!r})")


# ------------------------------------------------------------------------------------------------ SmolLM2 (slow)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["muon", "eaft", "asft", "llama_pro"])
def test_extras_run_one_step_on_smollm2(lf_dir, smollm2_path, method):
    if method == "llama_pro":
        from typer.testing import CliRunner

        from athanor.cli import app

        expanded = lf_dir / "smollm2-pro"
        result = CliRunner().invoke(app, ["llama-pro", str(smollm2_path), "--out", str(expanded), "--num-expand", "6"])
        assert result.exit_code == 0, result.output
        import transformers

        from athanor.models.loader import load_checkpoint
        from athanor.train.sft import _model_from_gguf

        original = _model_from_gguf(smollm2_path, load_checkpoint(smollm2_path))
        pro = transformers.AutoModelForCausalLM.from_pretrained(expanded)
        ids = torch.tensor([[1, 504, 3458, 282, 4649, 314, 7042, 30]])
        torch.testing.assert_close(_logits(pro, ids), _logits(original, ids), rtol=0, atol=1e-4)
        del original, pro
        keys = {**DATA, "template": "llama3", "finetuning_type": "freeze", "freeze_trainable_layers": 6,
                "use_llama_pro": True}
        out, _ = _run(lf_dir, expanded, keys)
        assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 36
        return
    keys = {"muon": {**SFT, "use_muon": True}, "eaft": {**SFT, "use_eaft_loss": True},
            "asft": {**SFT, "use_asft_loss": True, "asft_alpha": 0.1}}[method]
    out, _ = _run(lf_dir, smollm2_path, keys, ["lora_target=q_proj,v_proj"])
    assert (out / "adapter_model.safetensors").is_file()
