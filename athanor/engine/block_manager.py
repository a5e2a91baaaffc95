"""BlockManager: the paged KV cache's bookkeeping (fixed-size blocks, block tables, reference counts, prefix cache).

A block is `block_size` token slots in every layer's cache. A sequence's `block_table` lists its blocks in
order. A block whose tokens are all computed gets a chain hash (its tokens + the previous block's hash), so a
later sequence with the same prefix reuses it instead of recomputing it. Freed blocks keep their hash until
they are handed out again (least recently freed first), so a finished conversation's prefix stays reusable.
No torch here: this is pure bookkeeping, the runner turns block tables into tensors.

Reuse is token-granular (as SGLang's radix cache, finer than vLLM's whole blocks): past the last whole-block
hit, a cached block that follows the same prefix and starts with some of the new sequence's next tokens lends
them: its matching slots are copied into the new sequence's own fresh block (copy-on-write: the runner copies
them, every layer, before the step's forward; `pending_copies`), and only the rest is computed. Sources are the
hashed full blocks and the tail block of a finished sequence (its computed tokens; kept until the block is
handed out again: without a prefix allowance (keep_blocks, below) a tail is handed out first, so it serves the
next request, e.g. the same chat's next turn; with one it is evicted in turn, least recently freed first).
A free tail is taken over whole instead of copied.

Memory: the runner backs blocks with memory as their ids are first used (engine/model_runner.py grows its
pool), so ids are handed out low first: a free block that caches nothing, then an unused id below
`resident_blocks` (memory the runner already holds), then, while fewer than `keep_blocks` ids are in use, a new
id (the prefix cache's own allowance: finished prompts stay reusable instead of being evicted by the next
request), then the least recently freed cached block (its prefix is evicted), and only when every used block is
held by a running sequence a new id above them; `resident_blocks` doubles (up to num_blocks) whenever a new id
passes it, as the runner's pool does. The pool so stays near the KV cache in use plus at most `keep_blocks` of
cached prefixes (llama-server keeps finished prompts too, in up to 8 GiB of RAM by default: --cache-ram).
"""

from __future__ import annotations

from collections import OrderedDict

from athanor.engine.sequence import Sequence


def chain_hash(prev_hash: int, token_ids: list[int]) -> int:
    return hash((prev_hash, tuple(token_ids)))


class Block:
    __slots__ = ("block_id", "ref_count", "hash", "token_ids", "parent")

    def __init__(self, block_id: int) -> None:
        self.block_id = block_id
        self.ref_count = 0
        self.hash: int | None = None
        self.token_ids: list[int] = []  # a hashed block's tokens, or a finished sequence's computed tail tokens
        self.parent: int | None = None  # chain hash of the prefix before it, while it can lend its leading tokens


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True,
                 resident_blocks: int | None = None, keep_blocks: int = 0) -> None:
        """resident_blocks: ids the runner's pool holds at start (None: all num_blocks, a fixed pool).
        keep_blocks: the pool grows up to this many ids before a cached prefix is evicted (module docstring)."""
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.num_blocks = num_blocks
        self.blocks = [Block(i) for i in range(num_blocks)]
        # free blocks that were used before, least recently freed first; those caching nothing come first
        self.free_block_ids: OrderedDict[int, None] = OrderedDict()
        self.num_touched = 0  # ids [num_touched, num_blocks) were never handed out: free, cache nothing
        self.resident_blocks = num_blocks if resident_blocks is None else max(1, min(resident_blocks, num_blocks))
        self.keep_blocks = min(keep_blocks, num_blocks) if enable_prefix_caching else 0
        self.hash_to_block_id: dict[int, int] = {}
        self.children: dict[int, dict[int, None]] = {}  # prefix chain hash -> blocks that may lend tokens after it
        self.pending_copies: list[tuple[int, int, int]] = []  # (source, destination, slots): for the runner

    @property
    def num_free_blocks(self) -> int:
        return len(self.free_block_ids) + self.num_blocks - self.num_touched

    def num_blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    # --- admission -------------------------------------------------------------------------------------

    def _prefix_hits(self, seq: Sequence) -> tuple[list[int], tuple[int, int] | None]:
        """Block ids whose computed contents equal seq's leading full blocks, and (block id, n) of a cached block
        whose first n tokens equal seq's next ones (a partial hit; None if none). Never the whole sequence."""
        if not self.enable_prefix_caching:
            return [], None
        hits, h = [], 0
        # keep at least one token to compute: the last position's logits are needed to sample
        for i in range((seq.num_tokens - 1) // self.block_size):
            tokens = seq.block_tokens(i, self.block_size)
            block_id = self.hash_to_block_id.get(chain_hash(h, tokens))
            if block_id is None or self.blocks[block_id].token_ids != tokens:
                break
            h = self.blocks[block_id].hash
            hits.append(block_id)
        start = len(hits) * self.block_size
        return hits, self._partial_hit(h, seq.token_ids[start : min(start + self.block_size, seq.num_tokens - 1)])

    def _partial_hit(self, parent: int, tokens: list[int]) -> tuple[int, int] | None:
        """The block after prefix `parent` sharing the longest run of leading tokens with `tokens`, and that run."""
        best, best_n = None, 0
        for block_id in self.children.get(parent, ()):
            n = _common_prefix(self.blocks[block_id].token_ids, tokens)
            if n > best_n:
                best, best_n = block_id, n
        return None if best is None else (best, best_n)

    def can_allocate(self, seq: Sequence) -> bool:
        hits, _ = self._prefix_hits(seq)
        reused_free = sum(1 for b in hits if self.blocks[b].ref_count == 0)
        return self.num_blocks_for(seq.num_tokens) - len(hits) + reused_free <= self.num_free_blocks

    def allocate(self, seq: Sequence) -> None:
        """Give a waiting sequence blocks for all its tokens, reusing cached prefix blocks (and a partial block's
        leading tokens, see the module docstring)."""
        assert not seq.block_table
        hits, partial = self._prefix_hits(seq)
        for block_id in hits:
            block = self.blocks[block_id]
            if block.ref_count == 0:
                del self.free_block_ids[block_id]
            block.ref_count += 1
            seq.block_table.append(block_id)
            seq.block_hashes.append(block.hash)
        num_cached = len(seq.block_table) * self.block_size
        if partial is not None:
            source, n = partial
            seq.block_table.append(self._take_partial(source, n))
            num_cached += n
        seq.num_cached_tokens = seq.num_computed_tokens = num_cached
        self.ensure_slots(seq, seq.num_tokens)

    def _take_partial(self, source: int, n: int) -> int:
        """A block for the new sequence whose first n slots hold `source`'s: a free finished tail itself, else a
        fresh block the runner copies them into before the next forward."""
        block = self.blocks[source]
        if block.ref_count == 0 and block.hash is None:  # a finished sequence's tail that nothing else holds
            del self.free_block_ids[source]
            self._unlink(block)
            block.token_ids, block.ref_count = [], 1
            return source
        dest = self._take_free_block()
        if dest != source:  # source itself handed out (evicted): its slots are still intact until the forward
            self.pending_copies.append((source, dest, n))
        return dest

    def take_copies(self) -> list[tuple[int, int, int]]:
        """The (source, destination, slots) copies admissions asked for, in order; the runner does them first."""
        copies, self.pending_copies = self.pending_copies, []
        return copies

    # --- growth and release ----------------------------------------------------------------------------

    def can_ensure_slots(self, seq: Sequence, num_tokens: int) -> bool:
        return self.num_blocks_for(num_tokens) - len(seq.block_table) <= self.num_free_blocks

    def ensure_slots(self, seq: Sequence, num_tokens: int) -> None:
        """Grow seq's block table until it holds `num_tokens` slots."""
        while len(seq.block_table) * self.block_size < num_tokens:
            seq.block_table.append(self._take_free_block())

    def _take_free_block(self) -> int:
        block_id = self._pick_free_block()
        block = self.blocks[block_id]
        if block.hash is not None and self.hash_to_block_id.get(block.hash) == block_id:
            del self.hash_to_block_id[block.hash]  # its cached contents are about to be overwritten
        self._unlink(block)
        block.hash, block.token_ids, block.ref_count = None, [], 1
        return block_id

    def _link(self, block: Block, parent: int) -> None:
        block.parent = parent
        self.children.setdefault(parent, {})[block.block_id] = None

    def _unlink(self, block: Block) -> None:
        if block.parent is not None:
            siblings = self.children[block.parent]
            del siblings[block.block_id]
            if not siblings:
                del self.children[block.parent]
            block.parent = None

    def _pick_free_block(self) -> int:
        """Low ids first (see the module docstring): a used block caching nothing, an id the pool already holds,
        a new id while fewer than keep_blocks are used, the least recently freed cached block, and last a new id
        (the pool doubles)."""
        first = next(iter(self.free_block_ids), None)
        if first is not None and self._caches_nothing(self.blocks[first]):
            del self.free_block_ids[first]
            return first
        grow = first is None or self.num_touched < self.keep_blocks
        if self.num_touched < self.resident_blocks or (grow and self.num_touched < self.num_blocks):
            if self.num_touched >= self.resident_blocks:  # doubles; for the allowance, not past keep_blocks
                cap = self.num_blocks if first is None else max(self.keep_blocks, self.num_touched + 1)
                self.resident_blocks = min(self.num_blocks, cap, 2 * self.resident_blocks)
            self.num_touched += 1
            return self.num_touched - 1
        block_id, _ = self.free_block_ids.popitem(last=False)  # least recently freed first
        return block_id

    def free(self, seq: Sequence) -> None:
        """Release a sequence's blocks; shared prefix blocks stay with their other users. The computed tokens of
        its last, partly filled block stay reusable until that block is handed out again (first of all)."""
        self._keep_tail(seq)
        for block_id in reversed(seq.block_table):  # reversed: the prefix's head is evicted last
            block = self.blocks[block_id]
            block.ref_count -= 1
            assert block.ref_count >= 0
            if block.ref_count == 0:
                self.free_block_ids[block_id] = None
                if self._caches_nothing(block):  # reused before any cached block is evicted
                    self.free_block_ids.move_to_end(block_id, last=False)
        seq.block_table, seq.block_hashes = [], []

    def _caches_nothing(self, block: Block) -> bool:
        """A free block with nothing to lend; a finished sequence's tail counts as one only without a prefix
        allowance (keep_blocks 0: reused first); with one, the tail waits its turn like a cached block."""
        return block.hash is None and (block.parent is None or not self.keep_blocks)

    def _keep_tail(self, seq: Sequence) -> None:
        """Let the computed tokens of seq's block after its hashed ones be lent to a later sequence."""
        i = len(seq.block_hashes)
        num = seq.num_computed_tokens - i * self.block_size
        if not self.enable_prefix_caching or i >= len(seq.block_table) or num <= 0:
            return
        block = self.blocks[seq.block_table[i]]
        if block.ref_count != 1 or block.hash is not None or block.parent is not None:
            return  # shared, hashed or already lending: not this sequence's own unhashed tail
        block.token_ids = seq.token_ids[i * self.block_size : i * self.block_size + min(num, self.block_size)]
        self._link(block, seq.block_hashes[-1] if seq.block_hashes else 0)

    def commit_computed(self, seq: Sequence) -> None:
        """Hash the blocks that became full and computed this step, so other sequences can reuse them."""
        if not self.enable_prefix_caching:
            return
        num_full = seq.num_computed_tokens // self.block_size
        for i in range(len(seq.block_hashes), num_full):
            tokens = seq.block_tokens(i, self.block_size)
            h = chain_hash(seq.block_hashes[-1] if seq.block_hashes else 0, tokens)
            seq.block_hashes.append(h)
            block = self.blocks[seq.block_table[i]]
            if h not in self.hash_to_block_id:  # an identical block elsewhere keeps serving the cache
                block.hash, block.token_ids = h, tokens
                self.hash_to_block_id[h] = block.block_id
                self._link(block, seq.block_hashes[i - 1] if i else 0)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
