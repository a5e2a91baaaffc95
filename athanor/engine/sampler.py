"""Sampler: one logits row per sequence in, one next token (and optional logprobs) per sequence out.

For: turning the model runner's (B, V) logits into token ids, batched, on whatever device the logits
live on (CPU or CUDA). Not for: stopping (eos, stop ids, stop strings, max_tokens are the engine's and
text layer's job), detokenizing, or making generators (the engine seeds one per request; see
`make_generator`).

Processing order, each step only on the rows that ask for it:
  0. allowed             a grammar's mask (constrained decoding): tokens it forbids -> -inf
  1. logit_bias          logits[id] += bias
  2. min_tokens          stop ids (eos + stop_token_ids, merged by the engine) -> -inf while len(output) < min_tokens
  3. repetition_penalty  tokens in the last `repeat_last_n` of prompt+output: logit > 0 -> /p, else *p
  4. presence/frequency  over OUTPUT tokens: logit -= presence * (count > 0) + frequency * count
  5. temperature         logits /= T                       (greedy rows stop here and take the argmax)
  6. top_k               keep exactly k tokens (ties at the k-th logit broken by lower token id)
  7. top_p               keep the smallest prefix of the sorted distribution (after top-k) with mass >= p;
                         ties broken by lower token id; the top token is always kept
  8. min_p               drop tokens whose prob < min_p * max prob (after top-k/top-p)
  9. sample              argmax(probs / Exponential(1) noise) == a draw from probs (the "exponential trick")

A row with a generator draws its noise from it alone (exactly V draws per step), so a seeded request
gets the same tokens whatever else is in the batch. Rows without one share the global RNG.

Logprobs are those of the model's RAW distribution, log_softmax(logits) before any step above
(vLLM's default "raw_logprobs"), for the chosen token and the top-k alternatives.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from athanor.engine.sampling_params import SamplingParams

_NO_TOP_P = float("inf")  # a top_p that no cumulative mass reaches: float rounding cannot drop the tail


@dataclass
class SampleInput:
    """What the sampler needs to know about one row of logits."""

    params: SamplingParams
    prompt_token_ids: Sequence[int]
    output_token_ids: Sequence[int]
    generator: torch.Generator | None  # from params.seed, on the logits' device; None -> global RNG
    stop_token_ids: frozenset[int]  # the model's eos ids + params.stop_token_ids (merged by the engine)
    allowed: torch.Tensor | None = None  # (V,) bool from the sequence's grammar matcher; None -> every token


@dataclass
class SampleOutput:
    """The chosen token of one row, with raw-distribution logprobs when asked for."""

    token_id: int
    logprob: float | None = None  # when params.logprobs is not None
    top_logprobs: list[tuple[int, float]] | None = None  # when params.logprobs > 0, sorted desc


def make_generator(seed: int | None, device: torch.device | str) -> torch.Generator | None:
    """The per-request generator the engine puts in SampleInput (None when the request has no seed)."""
    if seed is None:
        return None
    return torch.Generator(device=device).manual_seed(seed)


def is_plain_greedy(inp: SampleInput) -> bool:
    """A row whose token is argmax(raw logits): greedy and nothing that changes the logits."""
    p = inp.params
    return (
        p.is_greedy
        and inp.allowed is None
        and not p.logit_bias
        and not _min_tokens_active(inp)
        and not _repetition_active(p)
        and p.presence_penalty == 0.0
        and p.frequency_penalty == 0.0
    )


class Sampler:
    """Stateless; one instance per engine. See the module docstring for the processing order."""

    def __call__(self, logits: torch.Tensor, inputs: list[SampleInput]) -> list[SampleOutput]:
        """logits (B, V) any float dtype, inputs one per row -> one SampleOutput per row."""
        assert logits.dim() == 2 and logits.shape[0] == len(inputs), "one SampleInput per logits row"
        if all(is_plain_greedy(inp) for inp in inputs):
            token_ids = logits.argmax(dim=-1)  # (B,) the common case: one kernel, no copies
        else:
            token_ids = self.sample(self.process(logits, inputs), inputs)
        return _outputs(logits, token_ids, inputs)

    def process(self, logits: torch.Tensor, inputs: list[SampleInput]) -> torch.Tensor:
        """Steps 1-8 -> float32 (B, V) logits, -inf where a token was removed. The input is not modified.

        Greedy rows get steps 1-4 only (temperature and truncation cannot change their argmax).
        """
        out = logits.float().clone()  # float32: bf16 logits lose the small differences penalties make
        _apply_allowed(out, inputs)
        _apply_logit_bias(out, inputs)
        _apply_min_tokens(out, inputs)
        _apply_repetition_penalty(out, inputs)
        _apply_presence_frequency(out, inputs)
        _apply_temperature(out, inputs)
        _apply_top_k_top_p(out, inputs)
        _apply_min_p(out, inputs)
        return out

    def sample(self, processed: torch.Tensor, inputs: list[SampleInput]) -> torch.Tensor:
        """Step 9: processed (B, V) float32 logits -> (B,) int64 token ids."""
        token_ids = processed.argmax(dim=-1)  # (B,) right for greedy rows; sampled rows overwritten below
        rows = [i for i, inp in enumerate(inputs) if not inp.params.is_greedy]
        if not rows:
            return token_ids
        idx = _rows(rows, processed)
        probs = torch.softmax(processed[idx], dim=-1)  # (R, V)
        noise = _exponential_noise(probs, [inputs[i].generator for i in rows])  # (R, V)
        token_ids[idx] = (probs / noise).argmax(dim=-1)
        return token_ids


# ---- steps 1-8: each edits logits (B, V) float32 in place, on the rows that need it ----


def _apply_allowed(logits: torch.Tensor, inputs: list[SampleInput]) -> None:
    for i, inp in enumerate(inputs):
        if inp.allowed is not None:
            logits[i].masked_fill_(~inp.allowed, float("-inf"))


def _apply_logit_bias(logits: torch.Tensor, inputs: list[SampleInput]) -> None:
    rows, ids, values = [], [], []
    for i, inp in enumerate(inputs):
        bias = inp.params.logit_bias or {}
        rows += [i] * len(bias)
        ids += bias.keys()
        values += bias.values()
    if rows:
        index = (_rows(rows, logits), _rows(ids, logits))
        logits.index_put_(index, torch.tensor(values, dtype=logits.dtype, device=logits.device), accumulate=True)


def _min_tokens_active(inp: SampleInput) -> bool:
    """A grammar decides its own end (masking eos there could leave no token allowed), so it wins over min_tokens."""
    return len(inp.output_token_ids) < inp.params.min_tokens and bool(inp.stop_token_ids) and inp.allowed is None


def _apply_min_tokens(logits: torch.Tensor, inputs: list[SampleInput]) -> None:
    rows, ids = [], []
    for i, inp in enumerate(inputs):
        if _min_tokens_active(inp):
            rows += [i] * len(inp.stop_token_ids)
            ids += inp.stop_token_ids
    if rows:
        logits[_rows(rows, logits), _rows(ids, logits)] = float("-inf")


def _repetition_active(p: SamplingParams) -> bool:
    return p.repetition_penalty != 1.0 and p.repeat_last_n != 0


def _repetition_window(inp: SampleInput) -> list[int]:
    """The last repeat_last_n tokens of prompt+output (all of them for -1)."""
    n = inp.params.repeat_last_n
    if n < 0:
        return [*inp.prompt_token_ids, *inp.output_token_ids]
    out = list(inp.output_token_ids[-n:])
    if len(out) < n:  # the window reaches back into the prompt
        out = list(inp.prompt_token_ids[len(out) - n :]) + out
    return out


def _apply_repetition_penalty(logits: torch.Tensor, inputs: list[SampleInput]) -> None:
    """Only the window's distinct tokens change, so only they are read and written (a window is tens of ids, the
    vocabulary tens of thousands): the same float32 operations as a dense where(seen, penalised, x), per token."""
    for i, inp in enumerate(inputs):
        if not _repetition_active(inp.params):
            continue
        ids = _rows(sorted(set(_repetition_window(inp))), logits)
        penalty = torch.tensor(inp.params.repetition_penalty, dtype=logits.dtype, device=logits.device)
        sub = logits[i].index_select(0, ids)
        logits[i].index_copy_(0, ids, torch.where(sub > 0, sub / penalty, sub * penalty))


def _apply_presence_frequency(logits: torch.Tensor, inputs: list[SampleInput]) -> None:
    """logit -= presence * (count > 0) + frequency * count, on the output's distinct tokens only (the others'
    subtrahend is 0: unchanged)."""
    for i, inp in enumerate(inputs):
        p = inp.params
        if not (p.presence_penalty or p.frequency_penalty) or not inp.output_token_ids:
            continue
        counts = Counter(inp.output_token_ids)
        ids = _rows(list(counts), logits)
        n = torch.tensor(list(counts.values()), dtype=logits.dtype, device=logits.device)
        presence = torch.tensor(p.presence_penalty, dtype=logits.dtype, device=logits.device)
        frequency = torch.tensor(p.frequency_penalty, dtype=logits.dtype, device=logits.device)
        sub = logits[i].index_select(0, ids)
        logits[i].index_copy_(0, ids, sub - (presence + frequency * n))


def _apply_temperature(logits: torch.Tensor, inputs: list[SampleInput]) -> None:
    temps = [1.0 if inp.params.is_greedy else inp.params.temperature for inp in inputs]
    if any(t != 1.0 for t in temps):
        logits.div_(_column(temps, logits))  # (B, V) / (B, 1)


def _apply_top_k_top_p(logits: torch.Tensor, inputs: list[SampleInput]) -> None:
    """Both truncate a sorted row, so they share one sort."""
    vocab = logits.shape[1]
    rows = [
        i
        for i, inp in enumerate(inputs)
        if not inp.params.is_greedy and (0 < inp.params.top_k < vocab or inp.params.top_p < 1.0)
    ]
    if not rows:
        return
    idx = _rows(rows, logits)
    # stable descending sort: among equal logits the lower token id comes first, and is the one kept
    sorted_logits, order = logits[idx].sort(dim=-1, descending=True, stable=True)  # (R, V) each
    top_k = _column([inputs[i].params.top_k or vocab for i in rows], logits)  # (R, 1)
    position = torch.arange(vocab, device=logits.device)  # (V,)
    sorted_logits.masked_fill_(position >= top_k, float("-inf"))
    top_p = _column([inputs[i].params.top_p if inputs[i].params.top_p < 1.0 else _NO_TOP_P for i in rows], logits)
    probs = torch.softmax(sorted_logits, dim=-1)  # (R, V) renormalised over the top-k set
    mass_before = probs.cumsum(dim=-1) - probs  # (R, V) mass of the tokens ranked above this one
    sorted_logits.masked_fill_(mass_before >= top_p, float("-inf"))  # keeps the smallest set with mass >= p
    logits[idx] = sorted_logits.scatter(1, order, sorted_logits)


def _apply_min_p(logits: torch.Tensor, inputs: list[SampleInput]) -> None:
    rows = [i for i, inp in enumerate(inputs) if not inp.params.is_greedy and inp.params.min_p > 0.0]
    if not rows:
        return
    idx = _rows(rows, logits)
    sub = logits[idx]  # (R, V)
    probs = torch.softmax(sub, dim=-1)
    threshold = _column([inputs[i].params.min_p for i in rows], logits) * probs.amax(dim=-1, keepdim=True)
    logits[idx] = sub.masked_fill(probs < threshold, float("-inf"))


# ---- step 9 and the outputs ----


def _exponential_noise(probs: torch.Tensor, generators: list[torch.Generator | None]) -> torch.Tensor:
    """(R, V) Exponential(1) noise; a row with a generator draws exactly V values from it, in row order."""
    noise = torch.empty_like(probs)
    seeded = [r for r, g in enumerate(generators) if g is not None]
    if len(seeded) < len(generators):
        noise.exponential_()  # one call for every row on the global RNG; seeded rows are overwritten
    for r in seeded:  # a loop over seeded rows, not over the vocabulary
        noise[r].exponential_(generator=generators[r])
    # an exact 0 would turn a 0-prob token into 0/0 = NaN, which argmax picks
    return noise.clamp_min_(torch.finfo(noise.dtype).tiny)


def _outputs(raw: torch.Tensor, token_ids: torch.Tensor, inputs: list[SampleInput]) -> list[SampleOutput]:
    """Token ids (B,) plus raw-distribution logprobs for the rows that ask; the only device->host syncs."""
    rows = [i for i, inp in enumerate(inputs) if inp.params.logprobs is not None]
    outputs = [SampleOutput(token_id=t) for t in token_ids.tolist()]
    if not rows:
        return outputs
    idx = _rows(rows, raw)
    logprobs = torch.log_softmax(raw[idx].float(), dim=-1)  # (R, V) the model's raw distribution
    chosen = logprobs.gather(1, token_ids[idx].unsqueeze(1)).squeeze(1).tolist()  # (R,)
    for r, i in enumerate(rows):
        outputs[i].logprob = chosen[r]
    k = max(inputs[i].params.logprobs for i in rows)
    if k:
        top_values, top_ids = logprobs.topk(k, dim=-1)  # (R, k) sorted desc
        top_values, top_ids = top_values.tolist(), top_ids.tolist()
        for r, i in enumerate(rows):
            n = inputs[i].params.logprobs
            if n:
                outputs[i].top_logprobs = list(zip(top_ids[r][:n], top_values[r][:n]))
    return outputs


# ---- small tensor helpers ----


def _rows(values: list[int], like: torch.Tensor) -> torch.Tensor:
    """A list of indices as an int64 tensor on `like`'s device."""
    return torch.tensor(values, dtype=torch.long, device=like.device)


def _column(values: list[float], like: torch.Tensor) -> torch.Tensor:
    """One value per row as an (R, 1) column that broadcasts over the vocabulary."""
    return torch.tensor(values, dtype=like.dtype, device=like.device).unsqueeze(1)
