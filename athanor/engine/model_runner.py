"""ModelRunner: owns the model and its paged KV cache; turns a scheduled batch into tensors and runs one step.

The cache's budget (`num_blocks`, from EngineConfig) is a cap, not an allocation: the pool starts at
KV_START_BYTES and grows (doubling, one layer at a time, used blocks copied) when a batch reaches a block id
it does not hold yet; the block manager hands out low ids first, so the pool stays near what sequences use.
Not for deciding what runs (scheduler.py) or picking tokens (sampler.py).
"""

from __future__ import annotations

import torch

from athanor.engine.config import EngineConfig
from athanor.engine.scheduler import ScheduledBatch
from athanor.nn.attention import AttentionMetadata
from athanor.nn.llama import LlamaModel


def kv_bytes_per_token(cfg, dtype: torch.dtype, kv_cache_type: str = "auto") -> int:
    """KV-cache bytes one token takes under a ModelConfig `cfg` (keys and values of every layer), with the cache
    stored as `kv_cache_type` (auto: `dtype`, the math dtype)."""
    from athanor.nn.kv_quant import bytes_per_head

    return 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * bytes_per_head(kv_cache_type, dtype, cfg.head_dim)


KV_START_BYTES = 4 * 2**20  # the pool a runner allocates at start (at least one block); it grows with use


def memory_bytes(model: LlamaModel) -> int:
    """Bytes a loaded model may hold: parameters and buffers (shared ones once), FBGEMM-packed weights, and its
    KV cache's budget (the pool grows up to it; `ModelRunner.kv_cache_resident_nbytes` is what it holds now)."""
    seen, total = set(), 0
    for t in [*model.parameters(), *model.buffers()]:
        if t.numel() and t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    total += sum(getattr(m, "packed_bytes", 0) for m in model.modules() if getattr(m, "packed", None) is not None)
    qweights = {id(m.qweight): m.qweight for m in model.modules() if getattr(m, "qweight", None) is not None}
    total += sum(w.nbytes for w in qweights.values() if not hasattr(w, "parts"))  # a tied head's parts: counted
    total += sum(p.nbytes for w in qweights.values() for p in getattr(w, "parts", ()) if id(p) not in qweights)
    owner = getattr(model, "kv_cache_owner", None)
    return total + (owner.kv_cache_nbytes() if owner is not None else 0)


class ModelRunner:
    def __init__(self, model: LlamaModel, config: EngineConfig) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.block_size = config.block_size
        self.kv_cache_type = config.kv_cache_type
        self.num_blocks = config.num_kvcache_blocks or max(1, config.kv_cache_bytes // (
            kv_bytes_per_token(model.config, self.dtype, self.kv_cache_type) * config.block_size))  # the cap
        self.block_bytes = kv_bytes_per_token(model.config, self.dtype, self.kv_cache_type) * self.block_size
        self.kv_caches: list = []  # one per layer: (2, num_allocated_blocks, block_size, KVH, D)
        self.num_allocated_blocks = self.num_zeroed_blocks = 0
        self.resident_target = 0  # set by the engine each step: how many blocks its block manager means to use
        self._grow(min(self.num_blocks, max(1, KV_START_BYTES // self.block_bytes)))

    def _grow(self, n: int) -> None:
        """Hold `n` blocks: each layer's cache re-allocated in turn (so the extra memory at once is one layer's),
        its zeroed blocks copied; the new blocks are zeroed when first handed out (_ensure_blocks). On the CPU the
        freed caches' pages go back to the system (at most log2(cap / start) times in a process)."""
        cfg = self.model.config
        shape = (2, n, self.block_size, cfg.num_key_value_heads, cfg.head_dim)
        z = self.num_zeroed_blocks
        for i in range(cfg.num_hidden_layers):
            new = self._empty(shape)
            if z:
                old = self.kv_caches[i]
                for dst, src in _parts(new, old):
                    dst[:, :z].copy_(src[:, :z])
            if i < len(self.kv_caches):
                self.kv_caches[i] = new
            else:
                self.kv_caches.append(new)
            if getattr(self.model, "kv_cache_owner", None) is self:
                self.model.layers[i].self_attn.kv_cache = new  # the old layer cache is freed here
        self.num_allocated_blocks = n
        self._bind_kv_cache()
        if self.device.type == "cpu":
            from athanor.heap import trim_heap

            trim_heap()  # the old layer caches were written: freed, glibc would keep their pages resident

    def _empty(self, shape: tuple[int, ...]):
        # empty, not zeros: blocks are zeroed when first handed out (see _ensure_blocks), so growing does not
        # write the whole pool; zeroed matters because masked slots still enter the attention matmul (0 * NaN)
        if self.kv_cache_type == "q8_0":
            from athanor.nn.kv_quant import QuantKV

            return QuantKV.allocate(shape, self.device)  # int8 + float16 scales, same indexing
        dtype = {"f16": torch.float16, "f32": torch.float32}.get(self.kv_cache_type, self.dtype)
        return torch.empty(shape, dtype=dtype, device=self.device)

    def _bind_kv_cache(self) -> None:
        """Point every attention layer at this runner's cache (another runner on the same model may have moved it)."""
        for layer, cache in zip(self.model.layers, self.kv_caches, strict=True):
            layer.self_attn.kv_cache = cache
        self.model.kv_cache_owner = self

    def prepare(self, batch: ScheduledBatch) -> tuple[torch.Tensor, torch.Tensor, AttentionMetadata, torch.Tensor | None]:
        """Flatten the batch: input ids, positions, slots, block tables, and the rows whose logits we need (None:
        every row, in order)."""
        input_ids, positions, slots, logits_rows = [], [], [], []
        query_lens, context_lens, tables = [], [], []
        bs = self.block_size
        for seq, n in batch:
            start, end = seq.num_computed_tokens, seq.num_computed_tokens + n
            input_ids += seq.token_ids[start:end]
            positions += range(start, end)
            slots += [seq.block_table[p // bs] * bs + p % bs for p in range(start, end)]
            if end == seq.num_tokens:  # this chunk reaches the end of the sequence: sample after it
                logits_rows.append(len(input_ids) - 1)
            query_lens.append(n)
            context_lens.append(end)
            tables.append(seq.block_table[: -(-end // bs)])
        self._ensure_blocks(max(max(t) for t in tables) + 1)
        width = max(len(t) for t in tables)
        dev = self.device
        meta = AttentionMetadata(
            slot_mapping=torch.tensor(slots, dtype=torch.long, device=dev),
            block_tables=torch.tensor([t + [0] * (width - len(t)) for t in tables], dtype=torch.long, device=dev),
            query_lens=query_lens,
            context_lens=context_lens,
        ).prepare(dev)
        every_row = len(logits_rows) == len(input_ids)  # one token per sequence (decode): the model skips the gather
        return (
            torch.tensor(input_ids, dtype=torch.long, device=dev),
            torch.tensor(positions, dtype=torch.long, device=dev),
            meta,
            None if every_row else torch.tensor(logits_rows, dtype=torch.long, device=dev),
        )

    def _ensure_blocks(self, upto: int) -> None:
        """Blocks [0, upto) allocated (the pool doubles, up to the cap) and zeroed before their first use."""
        if upto > self.num_blocks:
            raise ValueError(f"block id {upto - 1} is outside the KV cache's {self.num_blocks} blocks")
        if upto > self.num_allocated_blocks:
            target = max(upto, 2 * self.num_allocated_blocks)
            if self.resident_target:  # the block manager's pool size (it grows for the prefix allowance by less)
                target = max(upto, min(target, self.resident_target))
            self._grow(min(self.num_blocks, target))
        if upto > self.num_zeroed_blocks:
            for cache in self.kv_caches:
                for part, _ in _parts(cache, cache):
                    part[:, self.num_zeroed_blocks : upto].zero_()
            self.num_zeroed_blocks = upto

    def copy_slots(self, copies: list[tuple[int, int, int]]) -> None:
        """For each (source, destination, n): the first n token slots of block `source` into block `destination`,
        keys and values of every layer (a partial prefix-cache hit, engine/block_manager.py), in order."""
        if not copies:
            return
        self._ensure_blocks(max(d for _, d, _ in copies) + 1)  # zeroing a fresh destination comes before the copy
        for cache in self.kv_caches:
            for part, _ in _parts(cache, cache):
                for src, dst, n in copies:
                    part[:, dst, :n] = part[:, src, :n]

    def kv_cache_nbytes(self) -> int:
        """The cache's budget: what the pool may grow to (num_blocks blocks)."""
        return self.num_blocks * self.block_bytes

    def kv_cache_resident_nbytes(self) -> int:
        """What the pool holds now (num_allocated_blocks blocks)."""
        return self.num_allocated_blocks * self.block_bytes

    def run(self, batch: ScheduledBatch) -> torch.Tensor:
        """One forward step; returns (M, V) fp32 logits for the sequences that reached their last token, in
        batch order. A step mixing short chunks (decode tokens, a short prefill: the model's fused C path, see
        nn/llama.fused_step) with longer prefill chunks runs as two forwards, so each sequence takes the path,
        and gets the numbers, it would get alone."""
        if getattr(self.model, "kv_cache_owner", None) is not self:
            self._bind_kv_cache()
        limit = getattr(self.model, "fused_chunk_tokens", 0)
        short = [n <= limit for _, n in batch]
        if any(short) and not all(short):
            return self._run_split(batch, short)
        return self._forward(batch)

    def _run_split(self, batch: ScheduledBatch, short: list[bool]) -> torch.Tensor:
        parts = [[item for item, s in zip(batch, short) if s == want] for want in (True, False)]
        logits = [self._forward(part) for part in parts]
        order = [s for (seq, n), s in zip(batch, short) if seq.num_computed_tokens + n == seq.num_tokens]
        if not order:
            return torch.empty(0, self.model.config.vocab_size)
        short_rows, long_rows = iter(logits[0]), iter(logits[1])  # back to batch order, the two parts interleaved
        return torch.stack([next(short_rows if s else long_rows) for s in order])

    def _forward(self, batch: ScheduledBatch) -> torch.Tensor:
        input_ids, positions, meta, logits_rows = self.prepare(batch)
        if logits_rows is not None and len(logits_rows) == 0:  # only mid-prompt chunks: fill the cache, no head
            self.model(input_ids, positions, meta, logits_rows)
            return torch.empty(0, self.model.config.vocab_size)
        return self.model(input_ids, positions, meta, logits_rows)

    def logits_all(self, batch: ScheduledBatch) -> torch.Tensor:
        """(N, V) fp32 logits of every new token of the batch (scoring: perplexity through the paged cache)."""
        if getattr(self.model, "kv_cache_owner", None) is not self:
            self._bind_kv_cache()
        input_ids, positions, meta, _ = self.prepare(batch)
        with torch.inference_mode():
            return self.model(input_ids, positions, meta, None).float()


def _parts(a, b) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Matching tensors of two layer caches: the tensor itself, or an int8 cache's values and scales."""
    return [(a, b)] if isinstance(a, torch.Tensor) else [(a.data, b.data), (a.scale, b.scale)]
