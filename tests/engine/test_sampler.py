"""Sampler and SamplingParams: each processing step against a hand computation or a slow per-row reference,
the sampled distribution against a known one, seeded rows against themselves in other batches, and every
validation rule. CPU, well under 20 s; the CUDA parity test is marked gpu and skipped without CUDA.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter

import pytest
import torch

from athanor.engine.sampler import SampleInput, Sampler, is_plain_greedy, make_generator
from athanor.engine.sampling_params import SamplingParams, SamplingParamsError

INF = float("inf")


def make_input(
    params: SamplingParams | None = None,
    prompt: list[int] | None = None,
    output: list[int] | None = None,
    stop_ids: set[int] | None = None,
    device: str = "cpu",
) -> SampleInput:
    params = params or SamplingParams()
    return SampleInput(
        params=params,
        prompt_token_ids=prompt or [],
        output_token_ids=output or [],
        generator=make_generator(params.seed, device),
        stop_token_ids=frozenset(stop_ids or ()),
    )


def process_one(logits: list[float], **kw) -> torch.Tensor:
    """Processed logits (V,) of a single row; kw: SamplingParams fields plus prompt/output/stop_ids."""
    row = {k: kw.pop(k) for k in ("prompt", "output", "stop_ids") if k in kw}
    inp = make_input(SamplingParams(**kw), **row)
    return Sampler().process(torch.tensor([logits]), [inp])[0]


def kept(processed: torch.Tensor) -> set[int]:
    return set(torch.nonzero(torch.isfinite(processed)).flatten().tolist())


# ---- a slow, per-row, per-token reference of steps 1-8 (float64, plain Python) ----


def reference_process(logits: list[float], inp: SampleInput) -> list[float]:
    p, x = inp.params, [float(v) for v in logits]
    for t, b in (p.logit_bias or {}).items():
        x[t] += b
    if len(inp.output_token_ids) < p.min_tokens:
        for t in inp.stop_token_ids:
            x[t] = -INF
    if p.repetition_penalty != 1.0 and p.repeat_last_n != 0:
        history = list(inp.prompt_token_ids) + list(inp.output_token_ids)
        window = history if p.repeat_last_n < 0 else history[-p.repeat_last_n :]
        for t in set(window):
            x[t] = x[t] / p.repetition_penalty if x[t] > 0 else x[t] * p.repetition_penalty
    for t, count in Counter(inp.output_token_ids).items():
        x[t] -= p.presence_penalty + p.frequency_penalty * count
    if p.is_greedy:
        return x
    x = [v / p.temperature for v in x]
    order = sorted(range(len(x)), key=lambda i: (-x[i], i))  # ties: lower id first
    if p.top_k > 0:
        for i in order[p.top_k :]:
            x[i] = -INF
    if p.top_p < 1.0:
        probs, mass = softmax(x), 0.0
        for i in order:
            if mass >= p.top_p:
                x[i] = -INF
            mass += probs[i]
    if p.min_p > 0.0:
        probs = softmax(x)
        x = [v if pr >= p.min_p * max(probs) else -INF for v, pr in zip(x, probs)]
    return x


def softmax(x: list[float]) -> list[float]:
    m = max(x)
    e = [math.exp(v - m) if v != -INF else 0.0 for v in x]
    return [v / sum(e) for v in e]


# ---- steps 1-8, one at a time ----


def test_top_k_keeps_exactly_k_even_with_ties():
    logits = torch.randn(50, generator=torch.Generator().manual_seed(0)).tolist()
    for k in (1, 5, 49):
        out = process_one(logits, top_k=k)
        assert kept(out) == set(sorted(range(50), key=lambda i: -logits[i])[:k])
    # all equal: the k lowest ids are kept (stable sort), not every tied token
    assert kept(process_one([1.0] * 8, top_k=3)) == {0, 1, 2}
    assert kept(process_one([1.0] * 4096, top_k=3)) == {0, 1, 2}  # long rows: an unstable sort would differ
    assert kept(process_one([1.0] * 8, top_k=-1)) == set(range(8))  # -1 and 0 are off


def test_top_p_hand_computed():
    probs = [0.15, 0.5, 0.05, 0.3]  # sorted: id1 0.5, id3 0.3, id0 0.15, id2 0.05
    logits = [math.log(v) for v in probs]
    assert kept(process_one(logits, top_p=0.4)) == {1}  # 0.5 >= 0.4
    assert kept(process_one(logits, top_p=0.75)) == {1, 3}  # 0.8 >= 0.75
    assert kept(process_one(logits, top_p=0.85)) == {0, 1, 3}  # 0.95 >= 0.85
    assert kept(process_one(logits, top_p=0.99)) == {0, 1, 2, 3}
    # renormalised after top-k: of {id1 .625, id3 .375}, p=0.6 keeps id1 only
    assert kept(process_one(logits, top_k=2, top_p=0.6)) == {1}


def test_top_p_ties_keep_lower_ids():
    # four tokens of 0.25: p=0.5 is reached exactly after two, so the two lowest ids are kept
    assert kept(process_one([0.0] * 4, top_p=0.5)) == {0, 1}
    assert kept(process_one([0.0] * 4, top_p=0.51)) == {0, 1, 2}
    assert kept(process_one([0.0] * 1024, top_p=0.5)) == set(range(512))


def test_top_p_matches_reference_smallest_set():
    g = torch.Generator().manual_seed(1)
    for p in (0.1, 0.5, 0.9, 0.97):
        logits = (torch.randn(200, generator=g) * 2).tolist()
        inp = make_input(SamplingParams(top_p=p))
        expected = {i for i, v in enumerate(reference_process(logits, inp)) if v != -INF}
        assert kept(Sampler().process(torch.tensor([logits]), [inp])[0]) == expected
        # smallest set: its mass reaches p, and without its least likely member it does not
        probs = softmax(logits)
        assert sum(probs[i] for i in expected) >= p
        assert sum(probs[i] for i in expected) - min(probs[i] for i in expected) < p


def test_min_p_threshold_is_relative_to_max_prob():
    logits = [math.log(v) for v in (0.5, 0.3, 0.15, 0.05)]
    assert kept(process_one(logits, min_p=0.2)) == {0, 1, 2}  # threshold 0.1
    assert kept(process_one(logits, min_p=0.5)) == {0, 1}  # threshold 0.25
    assert kept(process_one(logits, min_p=1.0)) == {0}
    assert kept(process_one([0.0] * 4, min_p=1.0)) == {0, 1, 2, 3}  # equal probs all reach the max


def test_repetition_penalty_sign_and_window():
    logits = [2.0, -2.0, 1.0, 0.5]
    out = process_one(logits, repetition_penalty=2.0, prompt=[0], output=[1, 1])
    assert out.tolist() == [1.0, -4.0, 1.0, 0.5]  # >0 divided, <0 multiplied, a repeat penalised once
    # window of the last 2 of prompt+output [0, 1, 2] -> {1, 2}: token 0 (only in the prompt) untouched
    out = process_one(logits, repetition_penalty=2.0, repeat_last_n=2, prompt=[0], output=[1, 2])
    assert out.tolist() == [2.0, -4.0, 0.5, 0.5]
    # a window longer than the output reaches into the prompt
    out = process_one(logits, repetition_penalty=2.0, repeat_last_n=3, prompt=[3, 0], output=[1, 2])
    assert out.tolist() == [1.0, -4.0, 0.5, 0.5]
    out = process_one(logits, repetition_penalty=2.0, repeat_last_n=0, prompt=[0], output=[1, 2])
    assert out.tolist() == logits  # 0 -> off


def test_presence_and_frequency_count_output_tokens_only():
    out = process_one([0.0] * 5, presence_penalty=0.5, frequency_penalty=0.25, prompt=[3, 3, 4], output=[0, 0, 1])
    assert out.tolist() == [-1.0, -0.75, 0.0, 0.0, 0.0]  # 0: -.5-.25*2, 1: -.5-.25; prompt tokens untouched
    out = process_one([0.0] * 3, presence_penalty=-1.0, output=[2])
    assert out.tolist() == [0.0, 0.0, 1.0]  # negative presence encourages repeats


def test_logit_bias_is_added():
    out = process_one([1.0, 2.0, 3.0], logit_bias={0: 5.0, 2: -100.0})
    assert out.tolist() == [6.0, 2.0, -97.0]
    assert process_one([1.0, 2.0], logit_bias={"1": 1.5}).tolist() == [1.0, 3.5]  # JSON string keys


@pytest.mark.parametrize("ignore_eos", [False, True])
def test_min_tokens_masks_stop_ids_until_enough_output(ignore_eos):
    logits, stop = [0.0] * 6, {3, 5}  # eos 5 + a stop_token_id 3, merged by the engine
    masked = process_one(logits, min_tokens=2, ignore_eos=ignore_eos, stop_ids=stop, output=[1])
    assert kept(masked) == {0, 1, 2, 4}
    unmasked = process_one(logits, min_tokens=2, ignore_eos=ignore_eos, stop_ids=stop, output=[1, 2])
    assert kept(unmasked) == set(range(6))


def test_greedy_takes_argmax_after_penalties():
    logits = torch.tensor([[1.0, 3.0, 2.0]])
    sampler = Sampler()
    assert sampler(logits, [make_input(SamplingParams(temperature=0))])[0].token_id == 1
    # 3/2 = 1.5 < 2: the penalty moves the greedy pick, and temperature/top-k do not apply to greedy rows
    penalised = make_input(SamplingParams(temperature=0, repetition_penalty=2.0), output=[1])
    assert sampler(logits, [penalised])[0].token_id == 2
    assert sampler.process(logits, [make_input(SamplingParams(temperature=0, top_k=1))])[0].tolist() == [1.0, 3.0, 2.0]


def test_plain_greedy_batch_is_one_argmax_without_processing():
    class NoProcessing(Sampler):  # the fast path must not reach process()
        def process(self, logits, inputs):
            raise AssertionError("plain greedy batch went through process()")

    logits = torch.randn(7, 1000, generator=torch.Generator().manual_seed(2)).to(torch.bfloat16)
    inputs = [make_input(SamplingParams(temperature=0, logprobs=2 if i % 2 else None)) for i in range(7)]
    assert all(is_plain_greedy(inp) for inp in inputs)
    out = NoProcessing()(logits, inputs)
    assert [o.token_id for o in out] == logits.argmax(dim=-1).tolist()
    assert not is_plain_greedy(make_input(SamplingParams(temperature=0, logit_bias={1: 1.0})))
    assert not is_plain_greedy(make_input(SamplingParams(temperature=0, min_tokens=1), stop_ids={0}))
    assert is_plain_greedy(make_input(SamplingParams(temperature=0, min_tokens=1), stop_ids={0}, output=[4]))


def test_process_matches_reference_on_a_mixed_batch():
    g = torch.Generator().manual_seed(3)
    vocab = 64
    params = [
        SamplingParams(temperature=0.7, top_k=10, top_p=0.9, repetition_penalty=1.3, presence_penalty=0.4),
        SamplingParams(temperature=1.3, min_p=0.05, frequency_penalty=0.6, logit_bias={5: 3.0, 7: -2.0}),
        SamplingParams(temperature=0, repetition_penalty=1.5, repeat_last_n=4, min_tokens=9),
        SamplingParams(temperature=0.9, top_p=0.8, min_p=0.1, repetition_penalty=0.8, repeat_last_n=6),
        SamplingParams(),
    ]
    inputs = []
    for p in params:
        prompt = torch.randint(0, vocab, (12,), generator=g).tolist()
        output = torch.randint(0, vocab, (8,), generator=g).tolist()
        inputs.append(make_input(p, prompt, output, stop_ids={0, 1}))
    logits = torch.randn(len(params), vocab, generator=g) * 3
    before = logits.clone()
    got = Sampler().process(logits, inputs)
    assert torch.equal(logits, before)  # the caller's logits are not modified
    for row, inp in zip(range(len(inputs)), inputs):
        expected = torch.tensor(reference_process(logits[row].tolist(), inp), dtype=torch.float32)
        assert torch.equal(torch.isinf(got[row]), torch.isinf(expected)), f"row {row} keeps different tokens"
        torch.testing.assert_close(got[row], expected, rtol=1e-5, atol=1e-5)


# ---- step 9: the sampled distribution, seeds, batch independence ----


def chi_square(counts: list[int], expected_probs: list[float]) -> float:
    n = sum(counts)
    return sum((c - n * p) ** 2 / (n * p) for c, p in zip(counts, expected_probs))


def test_temperature_gives_the_expected_distribution():
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4])
    n, critical = 20_000, 16.27  # chi-square, 3 degrees of freedom, p = 0.001
    g = torch.Generator().manual_seed(1234)  # one seeded generator shared by every row: 20k draws from it
    results = {}
    for temperature in (1.0, 0.5):
        logits = probs.log().expand(n, 4)
        inputs = [SampleInput(SamplingParams(temperature=temperature), [], [], g, frozenset())] * n
        tokens = [o.token_id for o in Sampler()(logits, inputs)]
        results[temperature] = [tokens.count(t) for t in range(4)]
    sharpened = (probs**2 / (probs**2).sum()).tolist()  # softmax(log p / 0.5) = p^2 / sum p^2
    assert chi_square(results[1.0], probs.tolist()) < critical
    assert chi_square(results[0.5], sharpened) < critical
    assert chi_square(results[1.0], sharpened) > 10 * critical  # the check can tell the two apart


def run_steps(logits_per_step: torch.Tensor, rows: list[tuple[SamplingParams, int]], steps: int) -> list[list[int]]:
    """Decode `steps` tokens for a batch; row j reads logits_per_step[row_logits[j], step]. Returns tokens per row."""
    sampler = Sampler()
    inputs = [make_input(p, prompt=[1, 2, 3]) for p, _ in rows]
    outputs: list[list[int]] = [[] for _ in rows]
    for step in range(steps):
        logits = torch.stack([logits_per_step[src, step] for _, src in rows])  # (B, V)
        for j, out in enumerate(sampler(logits, inputs)):
            outputs[j].append(out.token_id)
            inputs[j].output_token_ids = outputs[j]
    return outputs


def test_seeded_row_is_the_same_alone_and_in_any_batch():
    steps, vocab = 50, 500
    logits_per_step = torch.randn(6, steps, vocab, generator=torch.Generator().manual_seed(5))  # (src, step, V)
    seeded = SamplingParams(temperature=0.9, top_k=100, top_p=0.95, repetition_penalty=1.1, seed=1234)
    alone = run_steps(logits_per_step, [(seeded, 0)], steps)[0]
    assert len(set(alone)) > 10  # really sampled, not a constant
    torch.manual_seed(99)  # the global RNG state differs between the two runs, too
    batch = [
        (SamplingParams(temperature=1.0, seed=7), 1),
        (SamplingParams(temperature=0.8, top_p=0.5), 2),  # unseeded: global RNG
        (seeded, 0),
        (SamplingParams(temperature=0), 3),  # greedy
        (SamplingParams(temperature=1.2, min_p=0.05, seed=1234), 4),  # same seed, other params and logits
    ]
    assert run_steps(logits_per_step, batch, steps)[2] == alone
    assert run_steps(logits_per_step, batch[::-1], steps)[2] == alone  # other position in the batch
    other_seed = dataclasses.replace(seeded, seed=4321)
    assert run_steps(logits_per_step, [(other_seed, 0)], steps)[0] != alone


# ---- logprobs ----


def test_logprobs_are_from_the_raw_distribution():
    g = torch.Generator().manual_seed(6)
    logits = torch.randn(3, 40, generator=g)
    params = [
        SamplingParams(temperature=0.5, top_k=3, repetition_penalty=1.5, logprobs=5, seed=1),
        SamplingParams(temperature=0, logit_bias={0: 100.0}, logprobs=0),
        SamplingParams(logprobs=None, seed=2),
    ]
    outs = Sampler()(logits, [make_input(p, prompt=[1, 2], output=[3]) for p in params])
    raw = torch.log_softmax(logits, dim=-1)
    assert outs[0].logprob == pytest.approx(raw[0, outs[0].token_id].item(), abs=1e-6)
    top = torch.topk(raw[0], 5)
    assert [t for t, _ in outs[0].top_logprobs] == top.indices.tolist()
    assert [v for _, v in outs[0].top_logprobs] == pytest.approx(top.values.tolist(), abs=1e-6)
    assert [v for _, v in outs[0].top_logprobs] == sorted((v for _, v in outs[0].top_logprobs), reverse=True)
    assert outs[1].token_id == 0 and outs[1].logprob == pytest.approx(raw[1, 0].item(), abs=1e-6)
    assert outs[1].top_logprobs is None  # logprobs=0: the chosen token only
    assert outs[2].logprob is None and outs[2].top_logprobs is None


# ---- SamplingParams ----


@pytest.mark.parametrize(
    "field,value",
    [
        ("max_tokens", 0),
        ("max_tokens", 1.5),
        ("temperature", -1),
        ("temperature", float("nan")),
        ("temperature", True),
        ("top_k", -2),
        ("top_k", 2.0),
        ("top_p", 0.0),
        ("top_p", 1.5),
        ("min_p", -0.1),
        ("min_p", 1.1),
        ("repetition_penalty", 0.0),
        ("presence_penalty", 2.5),
        ("frequency_penalty", -3),
        ("repeat_last_n", -2),
        ("seed", 1.0),
        ("seed", 2**64),
        ("stop", [""]),
        ("stop", [1]),
        ("stop_token_ids", [-1]),
        ("stop_token_ids", 5),
        ("ignore_eos", "yes"),
        ("min_tokens", -1),
        ("logprobs", 21),
        ("logprobs", -1),
        ("logit_bias", {1: 200.0}),
        ("logit_bias", {-1: 1.0}),
        ("logit_bias", {"x": 1.0}),
        ("logit_bias", [1, 2]),
    ],
)
def test_bad_field_is_a_one_line_value_error(field, value):
    with pytest.raises(ValueError) as err:
        SamplingParams(**{field: value})
    message = str(err.value)
    assert message.startswith(f"{field} must be ") and ", got " in message and "\n" not in message


def test_validation_messages_read_well():
    with pytest.raises(SamplingParamsError, match=r"^temperature must be a number >= 0, got -1$"):
        SamplingParams(temperature=-1)
    with pytest.raises(ValueError, match=r"^min_tokens \(5\) must be <= max_tokens \(3\)$"):
        SamplingParams(max_tokens=3, min_tokens=5)
    with pytest.raises(ValueError, match="logit_bias has token ids >= vocab size 10"):
        SamplingParams(logit_bias={12: 1.0}).validate_for_vocab(10)
    with pytest.raises(ValueError, match="stop_token_ids has token ids >= vocab size 10"):
        SamplingParams(stop_token_ids=[10]).validate_for_vocab(10)
    SamplingParams(logit_bias={9: 1.0}, stop_token_ids=[9]).validate_for_vocab(10)


def test_defaults_and_normalisation():
    p = SamplingParams()
    assert not p.is_greedy and p.max_tokens is None and p.stop == [] and p.logit_bias is None
    assert SamplingParams(temperature=0).is_greedy and SamplingParams(temperature=1e-7).is_greedy
    assert SamplingParams(top_k=-1).top_k == 0
    assert SamplingParams(stop="\n").stop == ["\n"]


# ---- CUDA ----


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_and_seeded_rows_are_batch_independent():
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(4, 300, generator=g) * 2
    params = [
        SamplingParams(temperature=0.8, top_k=20, top_p=0.9, repetition_penalty=1.2, logit_bias={3: 2.0}, seed=11),
        SamplingParams(temperature=0, frequency_penalty=0.5, logprobs=3),
        SamplingParams(temperature=1.1, min_p=0.1, min_tokens=5, presence_penalty=0.3, logprobs=2),
        SamplingParams(temperature=0.6, top_p=0.7, seed=12),
    ]
    cpu = [make_input(p, [1, 2, 3], [3, 4, 4], {0}) for p in params]
    gpu = [make_input(p, [1, 2, 3], [3, 4, 4], {0}, device="cuda") for p in params]
    want = Sampler().process(logits, cpu)
    got = Sampler().process(logits.cuda(), gpu).cpu()
    assert torch.equal(torch.isinf(got), torch.isinf(want))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    outs = Sampler()(logits.cuda().to(torch.bfloat16), gpu)  # bf16 logits, as the runner gives them on CUDA
    assert len(outs[1].top_logprobs) == 3 and len(outs[2].top_logprobs) == 2 and outs[0].top_logprobs is None
    # seeded row on CUDA: same tokens alone and in the batch
    steps = torch.randn(2, 30, 300, generator=g).cuda()  # (src, step, V)
    seeded = SamplingParams(temperature=1.0, top_p=0.95, seed=5)
    alone = [make_input(seeded, device="cuda")]
    batch = [make_input(SamplingParams(temperature=1.0), device="cuda"), make_input(seeded, device="cuda")]
    tokens_alone = [Sampler()(steps[0, t : t + 1], alone)[0].token_id for t in range(30)]
    tokens_batch = [Sampler()(torch.stack([steps[1, t], steps[0, t]]), batch)[1].token_id for t in range(30)]
    assert tokens_alone == tokens_batch


def _dense_penalties(logits: torch.Tensor, inputs: list) -> torch.Tensor:
    """Steps 3-4 as whole-vocabulary tensor operations (the sampler's former form): the bitwise reference."""
    out = logits.clone()
    for i, inp in enumerate(inputs):
        p, row = inp.params, out[i : i + 1]
        if p.repetition_penalty != 1.0 and p.repeat_last_n != 0:
            history = list(inp.prompt_token_ids) + list(inp.output_token_ids)
            window = history if p.repeat_last_n < 0 else history[-p.repeat_last_n :]
            seen = torch.zeros(row.shape, dtype=torch.bool)
            seen[0, window] = True
            penalty = torch.tensor([[p.repetition_penalty]])
            row.copy_(torch.where(seen, torch.where(row > 0, row / penalty, row * penalty), row))
        if p.presence_penalty or p.frequency_penalty:
            counts = torch.zeros(row.shape)
            for t in inp.output_token_ids:
                counts[0, t] += 1
            row -= torch.tensor([[p.presence_penalty]]) * (counts > 0) + torch.tensor([[p.frequency_penalty]]) * counts
    return out


@pytest.mark.parametrize("penalty", [1.1, 1.3, 0.8, 1.0001, 1.7, 2.0])
def test_sparse_penalties_match_dense_bit_for_bit(penalty):
    g = torch.Generator().manual_seed(int(penalty * 1000))
    vocab = 5000
    params = [SamplingParams(temperature=0, repetition_penalty=penalty, repeat_last_n=64),
              SamplingParams(temperature=1.0, top_p=1.0, repetition_penalty=penalty, repeat_last_n=-1, presence_penalty=0.3,
                             frequency_penalty=penalty - 0.61),
              SamplingParams(temperature=0, frequency_penalty=0.37),
              SamplingParams(temperature=0, repetition_penalty=penalty, repeat_last_n=5)]
    inputs = [make_input(p, torch.randint(0, vocab, (300,), generator=g).tolist(),
                         torch.randint(0, 40, (90,), generator=g).tolist()) for p in params]
    logits = torch.randn(len(params), vocab, generator=g) * 7
    logits[:, :50] = torch.tensor([0.0, -0.0, 1e-38, -1e-38, 3.4e38] * 10)  # signs, zeros, tiny and huge values
    got = Sampler().process(logits, inputs)
    assert torch.equal(got.view(torch.int32), _dense_penalties(logits, inputs).view(torch.int32))
