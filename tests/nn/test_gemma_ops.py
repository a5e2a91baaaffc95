"""Gemma 3's fused decode stack (athanor.nn.gemma_ops): one C call for every layer of a decode step against the
per-op PyTorch path of the same model, on a tiny random Gemma 3 whose projections are GGUF blocks of every
kernel type (Q4_0, Q5_0, Q8_0, Q4_K, Q5_K, Q6_K), with a sliding layer the sequence outgrows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from athanor.nn import gemma_ops, gguf_matmul
from athanor.nn.gguf_matmul import GGUFWeight

pytestmark = pytest.mark.skipif(not (gguf_matmul.available() and gemma_ops._load()[0] is not None),
                                reason="no C kernels here")

# HF matrix -> ggml type (in_features 256 or 512, so the K-quants fit); the tied Q8_0 table is the head too
TYPES = {"embed_tokens": 8, "q_proj": 6, "k_proj": 8, "v_proj": 2, "o_proj": 12, "gate_proj": 13, "up_proj": 6, "down_proj": 14}
WINDOW = 8


def _blocks(w: torch.Tensor, ggml_type: int, rng: np.random.Generator) -> GGUFWeight:
    """The gguf package's quantizer where it has one (32-blocks); random K-quant bytes with small scales."""
    import gguf

    out_f, in_f = w.shape
    if ggml_type < 12:
        raw = gguf.quants.quantize(w.numpy(), gguf.GGMLQuantizationType(ggml_type))
    else:
        _, bw, bb = gguf_matmul.GGUF_KERNEL_TYPES[ggml_type]
        raw = rng.integers(0, 256, size=(out_f * in_f // bw, bb), dtype=np.uint8)
        for off in ([208] if ggml_type == 14 else [0, 2]):
            raw[:, off : off + 2] = rng.uniform(2e-4, 8e-4, size=(raw.shape[0], 1)).astype(np.float16).view(np.uint8)
    return GGUFWeight(torch.from_numpy(np.ascontiguousarray(raw)).reshape(-1), ggml_type, out_f, in_f)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    tf = pytest.importorskip("transformers")
    from athanor.models.hf import load_safetensors, read_json
    from athanor.nn.config import ModelConfig
    from athanor.nn.llama import build_model

    torch.manual_seed(0)
    cfg = tf.Gemma3TextConfig(vocab_size=256, hidden_size=256, intermediate_size=512, num_hidden_layers=3,
                              num_attention_heads=4, num_key_value_heads=2, head_dim=64, query_pre_attn_scalar=48,
                              max_position_embeddings=512, rms_norm_eps=1e-6, tie_word_embeddings=True,
                              sliding_window=WINDOW,
                              layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                              rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1e6},
                                               "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}})
    hf = tf.Gemma3ForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.2)
    path = tmp_path_factory.mktemp("gemma_tiny")
    hf.save_pretrained(path)
    tensors = load_safetensors(path)
    rng = np.random.default_rng(0)
    for name in list(tensors):
        kind = name.split(".")[-2]
        if kind in TYPES:
            tensors[name] = _blocks(tensors[name].float(), TYPES[kind], rng)
    return build_model(ModelConfig.from_hf(read_json(path / "config.json")), tensors, quant={"blocks": True})


def _decode_all(model, seqs: list[list[int]]) -> list[torch.Tensor]:
    """Each sequence's first token prefilled, then every later token decoded, all sequences in each step
    together: per sequence (len - 1, V) logits of the decoded positions."""
    from athanor.engine.block_manager import BlockManager
    from athanor.engine.config import EngineConfig
    from athanor.engine.model_runner import ModelRunner
    from athanor.engine.sampling_params import SamplingParams
    from athanor.engine.sequence import Sequence

    runner = ModelRunner(model, EngineConfig(num_kvcache_blocks=64, block_size=4))
    runner._bind_kv_cache()
    bm = BlockManager(runner.num_blocks, 4, enable_prefix_caching=False)
    live = [Sequence(ids, SamplingParams()) for ids in seqs]
    for s in live:
        bm.allocate(s)
        model(*runner.prepare([(s, 1)])[:3], None)
        s.num_computed_tokens = 1
    out: list[list[torch.Tensor]] = [[] for _ in seqs]
    for step in range(1, max(map(len, seqs))):
        batch = [(i, s) for i, s in enumerate(live) if step < len(s.token_ids)]
        input_ids, positions, meta, _ = runner.prepare([(s, 1) for _, s in batch])
        logits = model(input_ids, positions, meta, None)
        for row, (i, s) in enumerate(batch):
            out[i].append(logits[row])
            s.num_computed_tokens += 1
    return [torch.stack(o) for o in out]


def test_the_tiny_model_takes_the_fused_path(model):
    assert model.decode_stack is not None
    assert [ly.self_attn.window for ly in model.layers] == [WINDOW, 0, WINDOW]


def test_fused_stack_matches_the_per_op_path(model):
    """Past the window (8) the sliding layers drop old positions. The norms here sum in another order than
    PyTorch's; an int8 activation rounded from them can land one step apart now and then, and the paths part
    by that step's weight: most positions agree to float rounding, none by more than a small fraction."""
    ids = torch.randint(0, 256, (30,), generator=torch.Generator().manual_seed(1)).tolist()
    stack = model.decode_stack
    try:
        (fused,) = _decode_all(model, [ids])
        model.decode_stack = None
        (per_op,) = _decode_all(model, [ids])
    finally:
        model.decode_stack = stack
    assert fused.shape == per_op.shape == (29, 256)
    scale = float(per_op.abs().max())
    err = (fused - per_op).abs().amax(-1) / scale  # (29,) per decoded position
    assert float(err.max()) < 0.01, err
    assert float(err.median()) < 1e-5, err
    top2 = per_op.topk(2, -1).values
    clear = (top2[:, 0] - top2[:, 1]) > 0.02 * scale
    assert torch.equal(fused.argmax(-1)[clear], per_op.argmax(-1)[clear])


def test_batched_decode_equals_each_sequence_alone(model):
    gen = torch.Generator().manual_seed(2)
    seqs = [torch.randint(0, 256, (n,), generator=gen).tolist() for n in (14, 5, 11)]
    together = _decode_all(model, seqs)
    for ids, got in zip(seqs, together):
        (alone,) = _decode_all(model, [ids])
        assert torch.equal(got, alone)


def _prefill_chunks(model, ids: list[int], sizes: list[int]) -> torch.Tensor:
    """(len(ids), V) logits of every position, the sequence fed in chunks of `sizes` (a prefix-cache hit then
    the new tokens of a chat: one step per chunk, each chunk's rows attending over the cache so far)."""
    from athanor.engine.block_manager import BlockManager
    from athanor.engine.config import EngineConfig
    from athanor.engine.model_runner import ModelRunner
    from athanor.engine.sampling_params import SamplingParams
    from athanor.engine.sequence import Sequence

    runner = ModelRunner(model, EngineConfig(num_kvcache_blocks=64, block_size=4))
    runner._bind_kv_cache()
    bm = BlockManager(runner.num_blocks, 4, enable_prefix_caching=False)
    seq = Sequence(ids, SamplingParams())
    bm.allocate(seq)
    out = []
    for n in sizes:
        out.append(model(*runner.prepare([(seq, n)])[:3], None))
        seq.num_computed_tokens += n
    assert seq.num_computed_tokens == len(ids)
    return torch.cat(out)


def test_short_prefill_chunks_run_fused_row_for_row_like_decode(model):
    """A short prefill chunk goes through the fused stack as rows of one sequence (nn/llama.fused_step): each
    row's k/v is in the cache before any row attends, so every position's logits equal, bit for bit, those of
    the same position decoded one token at a time, across the sliding window (8) too."""
    ids = torch.randint(0, 256, (30,), generator=torch.Generator().manual_seed(3)).tolist()
    assert model.fused_chunk_tokens >= 19
    by_token = _prefill_chunks(model, ids, [1] * 30)
    assert torch.equal(_prefill_chunks(model, ids, [11, 19]), by_token)
    assert torch.equal(_prefill_chunks(model, ids, [3, 1, 7, 19]), by_token)


def test_a_long_prefill_runs_fused_row_for_row_like_decode(model):
    """A prompt far longer than the sliding window and than 64 tokens (one step of 90 rows, then 30 more) runs
    through the fused stack: row-parallel norms and GELU, attention one row's query heads of a kv head at a time,
    the matmuls in 8-row tiles swept past runs of weight rows. Every position equals, bit for bit, that position
    decoded one token at a time."""
    ids = torch.randint(0, 256, (120,), generator=torch.Generator().manual_seed(7)).tolist()
    assert model.fused_chunk_tokens >= 90
    by_token = _prefill_chunks(model, ids, [1] * 120)
    assert torch.equal(_prefill_chunks(model, ids, [90, 30]), by_token)
    assert torch.equal(_prefill_chunks(model, ids, [120]), by_token)


def test_fused_prefill_chunk_is_as_close_to_the_per_op_prefill_as_decode_is(model):
    """The same bar as the decode step's (test_fused_stack_matches_the_per_op_path): the C norms sum in another
    order, so an int8 activation may land one step apart; most positions agree to float rounding."""
    ids = torch.randint(0, 256, (30,), generator=torch.Generator().manual_seed(4)).tolist()
    fused = _prefill_chunks(model, ids, [11, 19])
    limit = model.fused_chunk_tokens
    try:
        model.fused_chunk_tokens = 0  # every step per op
        per_op = _prefill_chunks(model, ids, [11, 19])
    finally:
        model.fused_chunk_tokens = limit
    scale = float(per_op.abs().max())
    err = (fused - per_op).abs().amax(-1) / scale
    assert float(err.max()) < 0.01, err
    assert float(err.median()) < 1e-5, err
    top2 = per_op.topk(2, -1).values
    clear = (top2[:, 0] - top2[:, 1]) > 0.02 * scale
    assert torch.equal(fused.argmax(-1)[clear], per_op.argmax(-1)[clear])


def test_a_mid_prompt_chunk_without_logits_rows_fills_the_cache_on_both_paths(model):
    """The engine asks no logits of a chunk that does not reach the prompt's end: (0, V), no head run."""
    from athanor.engine.block_manager import BlockManager
    from athanor.engine.config import EngineConfig
    from athanor.engine.model_runner import ModelRunner
    from athanor.engine.sampling_params import SamplingParams
    from athanor.engine.sequence import Sequence

    limit = model.fused_chunk_tokens
    try:
        for fused in (limit, 0):
            model.fused_chunk_tokens = fused
            runner = ModelRunner(model, EngineConfig(num_kvcache_blocks=64, block_size=4))
            bm = BlockManager(runner.num_blocks, 4, enable_prefix_caching=False)
            seq = Sequence(list(range(40)), SamplingParams())
            bm.allocate(seq)
            assert runner.run([(seq, 30)]).shape == (0, 256)
    finally:
        model.fused_chunk_tokens = limit
