"""Scheduler: which sequences run this step and how many of their tokens (continuous batching).

Every step each scheduled sequence computes its next `n` uncomputed tokens: n = 1 for a sequence that is
decoding, up to the step's token budget for one that is prefilling (chunked prefill). Sequences join
and leave the running batch between steps. When the KV cache runs out, the youngest running sequence is
preempted by recompute: its blocks are freed and it waits to be prefilled again (prompt + output so far).
No torch here.
"""

from __future__ import annotations

from collections import deque

from athanor.engine.block_manager import BlockManager
from athanor.engine.config import EngineConfig
from athanor.engine.sequence import Sequence, SequenceStatus

ScheduledBatch = list[tuple[Sequence, int]]  # (sequence, number of new tokens to compute this step)


class Scheduler:
    def __init__(self, config: EngineConfig, block_manager: BlockManager, max_model_len: int) -> None:
        self.max_num_seqs = config.max_num_seqs
        self.max_num_batched_tokens = config.max_num_batched_tokens
        self.max_model_len = max_model_len
        self.block_manager = block_manager
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> ScheduledBatch:
        budget = self.max_num_batched_tokens
        batch: ScheduledBatch = []
        # 1. running sequences, oldest first; preempt the youngest when blocks run out
        preempted = False
        i = 0
        while i < len(self.running) and budget > 0:
            seq = self.running[i]
            n = min(seq.num_tokens - seq.num_computed_tokens, budget)
            while not self.block_manager.can_ensure_slots(seq, seq.num_computed_tokens + n):
                preempted = True
                victim = self.running.pop()
                self._preempt(victim)
                if victim is seq:
                    break
            else:
                self.block_manager.ensure_slots(seq, seq.num_computed_tokens + n)
                batch.append((seq, n))
                budget -= n
                i += 1
        # 2. admit waiting sequences while there is room (not in a step that had to preempt)
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs and not preempted:
            seq = self.waiting[0]
            if not self.block_manager.can_allocate(seq):
                break
            self.waiting.popleft()
            self.block_manager.allocate(seq)
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            n = min(seq.num_tokens - seq.num_computed_tokens, budget)
            batch.append((seq, n))
            budget -= n
        return batch

    def _preempt(self, seq: Sequence) -> None:
        self.block_manager.free(seq)
        seq.reset_for_recompute()
        self.waiting.appendleft(seq)
        self.num_preemptions += 1

    def finish(self, seq: Sequence, reason: str) -> None:
        """End a sequence (stop, length, abort) and return its blocks."""
        if seq.is_finished:
            return
        if seq.status == SequenceStatus.RUNNING:
            self.running.remove(seq)
            self.block_manager.free(seq)
        else:
            self.waiting.remove(seq)
        seq.status, seq.finish_reason = SequenceStatus.FINISHED, reason

    def append_token(self, seq: Sequence, token_id: int) -> None:
        """Record a sampled token and finish the sequence if it hit a stop token or a length limit."""
        seq.token_ids.append(token_id)
        p = seq.params
        if token_id in seq.stop_token_ids and not (p.ignore_eos and token_id not in p.stop_token_ids):
            self.finish(seq, "stop")
        elif p.max_tokens is not None and seq.num_output_tokens >= p.max_tokens:
            self.finish(seq, "length")
        elif seq.num_tokens >= self.max_model_len:
            self.finish(seq, "length")
