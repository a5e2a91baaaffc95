"""LLMEngine: token ids in, token ids out. add_request → step() repeatedly → outputs; abort frees the blocks.

`step()` is the whole engine: schedule → run the model → sample → record. It knows nothing of text,
templates or HTTP; the text face (llm.py) and the async engine (async_engine.py) wrap it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from athanor.engine.block_manager import BlockManager
from athanor.engine.config import EngineConfig
from athanor.engine.model_runner import ModelRunner
from athanor.engine.sampler import SampleInput, SampleOutput, Sampler
from athanor.engine.sampling_params import SamplingParams
from athanor.engine.scheduler import Scheduler
from athanor.engine.sequence import Sequence
from athanor.errors import ContextLengthError
from athanor.nn.llama import LlamaModel


@dataclass
class StepOutput:
    """What one step produced for one request: at most one new token, and whether it finished."""

    request_id: str
    new_token_ids: list[int] = field(default_factory=list)
    logprobs: list[SampleOutput] = field(default_factory=list)
    finish_reason: str | None = None
    seq: Sequence | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class EngineStats:
    num_steps: int = 0
    num_prompt_tokens: int = 0  # tokens prefilled (prefix-cache hits excluded)
    num_generated_tokens: int = 0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0  # steps that ran no prompt token: model, sampling and bookkeeping
    num_decode_steps: int = 0


class LLMEngine:
    def __init__(self, model: LlamaModel, config: EngineConfig, eos_token_ids: set[int]) -> None:
        self.config = config
        self.runner = ModelRunner(model, config)
        cache_tokens = self.runner.num_blocks * config.block_size
        self.max_model_len = min(config.max_model_len or model.config.max_position_embeddings, cache_tokens)
        self.block_manager = BlockManager(self.runner.num_blocks, config.block_size, config.enable_prefix_caching,
                                          resident_blocks=self.runner.num_allocated_blocks,  # the pool grows with use
                                          keep_blocks=config.prefix_cache_bytes // self.runner.block_bytes)
        self.scheduler = Scheduler(config, self.block_manager, self.max_model_len)
        self.sampler = Sampler()
        self.eos_token_ids = frozenset(eos_token_ids)
        self.requests: dict[str, Sequence] = {}
        self.stats = EngineStats()

    # --- requests ----------------------------------------------------------------------------------------

    def add_request(self, prompt_token_ids: list[int], params: SamplingParams, request_id: str | None = None) -> Sequence:
        if not prompt_token_ids:
            raise ValueError("prompt is empty: at least one token is needed")
        if len(prompt_token_ids) >= self.max_model_len:
            raise ContextLengthError(
                f"prompt is {len(prompt_token_ids)} tokens; the context holds {self.max_model_len} "
                "(prompt + at least one new token); shorten the prompt or raise num_ctx"
            )
        vocab = self.runner.model.config.vocab_size
        if min(prompt_token_ids) < 0 or max(prompt_token_ids) >= vocab:
            raise ValueError(f"prompt has token ids outside the vocabulary [0, {vocab})")
        params.validate_for_vocab(vocab)  # logit_bias / stop_token_ids ids in range
        seq = Sequence(prompt_token_ids, params, request_id)
        if seq.request_id in self.requests:
            raise ValueError(f"request id {seq.request_id!r} is already running")
        seq.stop_token_ids = self.eos_token_ids | frozenset(params.stop_token_ids)
        if params.seed is not None:
            seq.generator = torch.Generator(device=self.runner.device).manual_seed(params.seed)
        self.requests[seq.request_id] = seq
        self.scheduler.add(seq)
        return seq

    def abort(self, request_id: str) -> None:
        """Stop a request now (client gone); its blocks go back to the pool. Unknown ids are ignored."""
        self.finish(request_id, "abort")

    def finish(self, request_id: str, reason: str) -> None:
        """End a request with a reason decided above the engine (a stop string, an abort)."""
        seq = self.requests.pop(request_id, None)
        if seq is not None:
            self.scheduler.finish(seq, reason)

    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished()

    # --- the loop ----------------------------------------------------------------------------------------

    def step(self) -> list[StepOutput]:
        # 1. schedule: who runs, how many tokens each
        batch = self.scheduler.schedule()
        if not batch:
            return []
        t0 = time.perf_counter()
        # 2. run the model over the flattened batch; logits only for sequences at their last token (first, the
        # partial prefix hits' slots are copied into the blocks of the sequences that reuse them)
        self.runner.resident_target = self.block_manager.resident_blocks
        self.runner.copy_slots(self.block_manager.take_copies())
        logits = self.runner.run(batch)
        # 3. bookkeeping: computed tokens, prefix-cache hashes
        sampling, num_prefill = [], 0
        for seq, n in batch:
            is_decode = n == 1 and seq.num_output_tokens > 0 and seq.num_computed_tokens == seq.num_tokens - 1
            num_prefill += 0 if is_decode else n
            seq.num_computed_tokens += n
            self.block_manager.commit_computed(seq)
            if seq.num_computed_tokens == seq.num_tokens:
                sampling.append(seq)
        # 4. sample one token per finished-prefill / decoding sequence and record it
        outputs = self._sample_and_record(logits, sampling)
        self._account(num_prefill, len(outputs), time.perf_counter() - t0)
        return outputs

    def _sample_and_record(self, logits: torch.Tensor, seqs: list[Sequence]) -> list[StepOutput]:
        if not seqs:
            return []
        width = logits.shape[1]
        inputs = [
            SampleInput(s.params, s.prompt_token_ids, s.output_token_ids, s.generator, s.stop_token_ids,
                        s.matcher.allowed(width).to(logits.device) if s.matcher is not None else None)
            for s in seqs
        ]
        outputs = []
        now = time.perf_counter()
        for seq, sample in zip(seqs, self.sampler(logits, inputs)):
            seq.first_token_time = seq.first_token_time or now
            if seq.params.logprobs is not None:
                seq.output_logprobs.append(sample)
            if seq.matcher is not None:
                seq.matcher.accept(sample.token_id)
            self.scheduler.append_token(seq, sample.token_id)
            out = StepOutput(seq.request_id, [sample.token_id], [sample] if seq.params.logprobs is not None else [],
                             seq.finish_reason, seq)
            if seq.is_finished:
                self.requests.pop(seq.request_id, None)
            outputs.append(out)
        return outputs

    def _account(self, num_prefill: int, num_sampled: int, seconds: float) -> None:
        s = self.stats
        s.num_steps += 1
        s.num_prompt_tokens += num_prefill
        s.num_generated_tokens += num_sampled
        if num_prefill:
            s.prefill_seconds += seconds
        else:
            s.decode_seconds += seconds
            s.num_decode_steps += 1

    # --- batch face --------------------------------------------------------------------------------------

    def generate(self, prompts: list[list[int]], params: SamplingParams | list[SamplingParams]) -> list[Sequence]:
        """Run prompts to completion together; returns finished sequences in prompt order."""
        plist = params if isinstance(params, list) else [params] * len(prompts)
        seqs = [self.add_request(p, sp) for p, sp in zip(prompts, plist)]
        while self.has_unfinished():
            self.step()
        return seqs
