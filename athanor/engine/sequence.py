"""Sequence: one request's tokens and its place in the KV cache, as the scheduler and runner see it.

Not for text (the text layer in llm.py owns detokenization and stop strings).
"""

from __future__ import annotations

import itertools
import time
from enum import Enum, auto

from athanor.engine.sampling_params import SamplingParams

_ids = itertools.count()


class SequenceStatus(Enum):
    WAITING = auto()
    RUNNING = auto()
    FINISHED = auto()


class Sequence:
    def __init__(self, token_ids: list[int], params: SamplingParams, request_id: str | None = None) -> None:
        self.request_id = request_id or f"req-{next(_ids)}"
        self.token_ids = list(token_ids)
        self.num_prompt_tokens = len(token_ids)
        self.prompt_token_ids = tuple(token_ids)  # fixed: built once, not sliced out of token_ids every step
        self.params = params
        self.status = SequenceStatus.WAITING
        self.finish_reason: str | None = None  # "stop" | "length" | "abort"
        self.block_table: list[int] = []
        self.num_computed_tokens = 0  # tokens whose K/V are in the cache
        self.num_cached_tokens = 0  # of those, how many came from the prefix cache at admission
        self.block_hashes: list[int] = []  # chain hashes of this sequence's full, computed blocks
        self.output_logprobs: list = []  # SampleOutput per generated token when logprobs were asked for
        self.generator = None  # torch.Generator when params.seed is set
        self.stop_token_ids: frozenset[int] = frozenset()
        self.matcher = params.guide.matcher() if params.guide is not None else None  # grammar position
        self.num_preemptions = 0
        self.arrival_time = time.perf_counter()
        self.first_token_time: float | None = None

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens :]

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def is_finished(self) -> bool:
        return self.status == SequenceStatus.FINISHED

    def block_tokens(self, i: int, block_size: int) -> list[int]:
        return self.token_ids[i * block_size : (i + 1) * block_size]

    def reset_for_recompute(self) -> None:
        """Preempted: forget the cache; prompt + output so far will be prefilled again."""
        self.block_table, self.block_hashes = [], []
        self.num_computed_tokens = self.num_cached_tokens = 0
        self.status = SequenceStatus.WAITING
        self.num_preemptions += 1
