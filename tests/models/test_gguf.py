"""GGUF loading and export.

References: (1) round trips of tiny random transformers models through write_gguf/load_gguf; (2) transformers'
own GGUF loader, which reads our exported files (checks our llama.cpp permutation from the outside) and the
real built-in SmolLM2 file (tensors and tokenizer); (3) gguf.quants for the quantized types.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np
import pytest
import tokenizers
import torch
from tokenizers import decoders, models, pre_tokenizers, trainers

from athanor.errors import ModelFormatError, UnsupportedArchitectureError
from athanor.models.gguf import inspect_gguf, load_gguf, permute_qk, unpermute_qk
from athanor.models.gguf_export import write_gguf
from athanor.nn.config import ModelConfig
from athanor.text.tokenizer import Tokenizer

CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TEXTS = [
    "Hello world", "The quick brown fox jumps over the lazy dog.", "12345", "phone: 555-0199, pi=3.14159",
    "def f(x):\n    return x ** 2\n", "for (int i = 0; i < n; ++i) { sum += a[i]; }", "   leading spaces",
    "trailing spaces   ", "tabs\tand\nnewlines\n\n\n", "  \n \t ", "", "a", "It's, isn't it? They'll've",
    "中文分词测试", "日本語のテキスト", "Привет, мир", "emoji 😀👍🏽 and 🇫🇷",
    "naïve café résumé",
    "<|im_start|>user\nhi<|im_end|>", "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>assistant\n",
    "x<|endoftext|>y", "URL https://example.com/a?b=c&d=e#f", "snake_case camelCase PascalCase",
    "\\n escaped \\t", "$$\\int_0^1 x^2 dx$$", "multiple     internal     spaces", "MiXeD CaSe 123abc",
    "ellipsis… and — dashes", "1 2 3 4 5 6 7 8 9 0", "<think>reasoning</think>",
]


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tiny_tokenizer() -> Tokenizer:
    """A byte-level BPE trained on the test texts, with ChatML specials; ~400 tokens."""
    backend = tokenizers.Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(TEXTS * 3, trainer)
    backend.add_tokens([tokenizers.AddedToken("<think>", special=False, normalized=False)])
    return Tokenizer(backend, bos_token="<|im_start|>", eos_token="<|im_end|>", chat_template=CHATML,
                     stop_token_ids=[0])


def _hf_model(arch: str, vocab_size: int, **overrides):
    import transformers

    shape = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "vocab_size": vocab_size, "max_position_embeddings": 16384, "rms_norm_eps": 1e-5}
    cls = {"llama": transformers.LlamaConfig, "mistral": transformers.MistralConfig,
           "qwen2": transformers.Qwen2Config, "qwen3": transformers.Qwen3Config}[arch]
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cls(**{**shape, **overrides}), dtype=torch.float32)
    for p in model.parameters():  # norms start at exactly 1.0; randomize so a swapped norm would show
        p.data.normal_(0, 0.5)
    return model.eval()


def _checkpoint(model) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    config = ModelConfig.from_hf(model.config.to_dict())
    tensors = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if config.tie_word_embeddings:
        tensors.pop("lm_head.weight")
    return config, tensors


CASES = {
    "llama": ("llama", {}),
    "llama3-rope-tied": ("llama", {"tie_word_embeddings": True, "rope_theta": 500000.0, "rope_scaling": {
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192}}),
    "mistral": ("mistral", {}),
    "qwen2": ("qwen2", {}),
    "qwen3": ("qwen3", {"head_dim": 32}),  # head_dim != hidden / heads: must come from key_length
}


# ---------------------------------------------------------------- round trips


def _assert_config_matches(loaded: ModelConfig, original: ModelConfig) -> None:
    expected_arch = "llama" if original.arch == "mistral" else original.arch  # llama.cpp writes Mistral as llama
    assert loaded.arch == expected_arch
    skip = {"arch", "extra"}
    for f in dataclasses.fields(ModelConfig):
        if f.name not in skip:
            assert getattr(loaded, f.name) == getattr(original, f.name), f.name
    if original.extra.get("sliding_window"):
        assert loaded.extra["sliding_window"] == original.extra["sliding_window"]


@pytest.mark.parametrize("case", list(CASES))
def test_f32_round_trip_is_exact(case: str, tiny_tokenizer: Tokenizer, tmp_path: Path) -> None:
    arch, overrides = CASES[case]
    config, tensors = _checkpoint(_hf_model(arch, tiny_tokenizer.vocab_size, **overrides))
    path = write_gguf(config, tensors, tiny_tokenizer, tmp_path / "tiny.gguf", "F32")
    ckpt = load_gguf(path)

    _assert_config_matches(ckpt.config, config)
    assert ckpt.tensors.keys() == tensors.keys()
    for name, w in tensors.items():
        assert ckpt.tensors[name].dtype == torch.float32
        assert torch.equal(ckpt.tensors[name], w), name
    assert ckpt.generation_defaults["eos_token_id"] == tiny_tokenizer.eos_token_id
    assert ckpt.info["path"] == str(path) and ckpt.info["format"] == "gguf"


def test_tokenizer_round_trip(tiny_tokenizer: Tokenizer, tmp_path: Path) -> None:
    config, tensors = _checkpoint(_hf_model("qwen2", tiny_tokenizer.vocab_size + 5))  # padded embedding rows
    tok = load_gguf(write_gguf(config, tensors, tiny_tokenizer, tmp_path / "t.gguf")).tokenizer
    assert isinstance(tok, Tokenizer)
    for text in TEXTS:
        ids = tok.encode(text, add_special_tokens=False)
        assert ids == tiny_tokenizer.encode(text, add_special_tokens=False), text
        assert tok.decode(ids, skip_special_tokens=False) == text
    assert tok.token_to_id("<|im_start|>") == tiny_tokenizer.token_to_id("<|im_start|>")
    assert len(tok.encode("<think>", add_special_tokens=False)) == 1  # user-defined token kept whole
    assert (tok.bos_token, tok.eos_token, tok.chat_template) == ("<|im_start|>", "<|im_end|>", CHATML)
    assert tok.stop_token_ids == {0, tiny_tokenizer.eos_token_id}
    assert tok.add_bos_token is False
    assert tok.id_to_token(tiny_tokenizer.vocab_size + 2) == f"[PAD{tiny_tokenizer.vocab_size + 2}]"


def test_permutation_is_llama_cpp_convention() -> None:
    # one head, head_dim 6: HF rows (a0 a1 a2 | b0 b1 b2) rotate pairs (a_i, b_i); llama.cpp wants them adjacent
    w = torch.arange(6.0).reshape(6, 1)
    assert permute_qk(w, 1).flatten().tolist() == [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]
    w = torch.randn(3 * 8, 5)
    assert torch.equal(unpermute_qk(permute_qk(w, 3), 3), w)


# transformers' GGUF reader ignores attention.key_length, so a Qwen3 file must use its default head_dim (128)
@pytest.mark.parametrize("arch,overrides", [("llama", {}), ("qwen3", {"head_dim": 128})], ids=["llama", "qwen3"])
def test_transformers_reads_our_export(arch: str, overrides: dict, tiny_tokenizer: Tokenizer, tmp_path: Path) -> None:
    """An outside reader (transformers undoes llama.cpp's permutation itself) gets the original weights
    and the same logits: checks write_gguf's layout against llama.cpp's convention, not just our inverse."""
    from transformers import AutoModelForCausalLM

    model = _hf_model(arch, tiny_tokenizer.vocab_size, **overrides)
    config, tensors = _checkpoint(model)
    write_gguf(config, tensors, tiny_tokenizer, tmp_path / "m.gguf", "F32")
    theirs = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="m.gguf", dtype=torch.float32).eval()
    state = theirs.state_dict()
    for name, w in tensors.items():
        assert torch.equal(state[name], w), name
    ids = torch.tensor([[1, 5, 9, 42, 7]])
    with torch.no_grad():
        torch.testing.assert_close(theirs(ids).logits, model(ids).logits, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- quantized types


def _reference_quant(w: torch.Tensor, qtype: str) -> torch.Tensor:
    q = gguf.GGMLQuantizationType[qtype]
    return torch.from_numpy(gguf.quants.dequantize(gguf.quants.quantize(w.numpy(), q), q).copy())


@pytest.mark.parametrize("qtype,max_rel_err", [("F16", 1e-3), ("BF16", 1e-2), ("Q8_0", 0.02), ("Q4_0", 0.2),
                                                ("Q4_1", 0.15)])
def test_quantized_export_loads(qtype: str, max_rel_err: float, tiny_tokenizer: Tokenizer, tmp_path: Path) -> None:
    config, tensors = _checkpoint(_hf_model("llama", tiny_tokenizer.vocab_size))
    ckpt = load_gguf(write_gguf(config, tensors, tiny_tokenizer, tmp_path / "q.gguf", qtype))
    assert ckpt.info["quantization"] == qtype
    for name, w in tensors.items():
        got = ckpt.tensors[name]
        if w.ndim == 1:  # norms stay F32
            assert torch.equal(got, w), name
            continue
        rel = ((got - w).norm() / w.norm()).item()
        assert 0 < rel < max_rel_err, (name, rel)
        # exactly llama.cpp's rounding, in llama.cpp's row order
        heads = {"q_proj": config.num_attention_heads, "k_proj": config.num_key_value_heads}
        n_head = next((n for key, n in heads.items() if key in name), None)
        stored = permute_qk(w, n_head) if n_head else w
        expected = _reference_quant(stored, qtype)
        assert torch.equal(got, unpermute_qk(expected, n_head) if n_head else expected), name


# ---------------------------------------------------------------- the real built-in model


@pytest.fixture(scope="module")
def smollm2(smollm2_path: Path):
    return load_gguf(smollm2_path)


@pytest.mark.slow
def test_inspect_builtin(smollm2_path: Path) -> None:
    info = inspect_gguf(smollm2_path)
    assert {k: info[k] for k in ("format", "arch", "quantization", "context_length", "embedding_length", "license")} \
        == {"format": "gguf", "arch": "llama", "quantization": "Q4_1", "context_length": 8192,
            "embedding_length": 576, "license": "apache-2.0"}
    assert info["num_parameters"] == 134_515_008  # 30 layers of 576-wide blocks + 49152 x 576 embedding, tied
    assert info["chat_template"].startswith("{% for message in messages %}")
    assert info["name"]


@pytest.mark.slow
def test_builtin_tensors_match_transformers(smollm2, smollm2_transformers) -> None:
    ref = smollm2_transformers
    state = ref.state_dict()
    assert len(smollm2.tensors) == 272
    assert set(state) - set(smollm2.tensors) == {"lm_head.weight"}  # tied: transformers lists it, we do not
    for name, w in smollm2.tensors.items():
        torch.testing.assert_close(w, state[name], rtol=0, atol=1e-6, msg=name)
    c, r = smollm2.config, ref.config
    assert (c.hidden_size, c.intermediate_size, c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads,
            c.vocab_size, c.max_position_embeddings, c.head_dim) == (576, 1536, 30, 9, 3, 49152, 8192, 64)
    assert c.num_attention_heads == r.num_attention_heads and c.num_key_value_heads == r.num_key_value_heads
    assert c.tie_word_embeddings and c.rope_theta == 100000.0 and c.rms_norm_eps == 1e-5
    assert c.rope_scaling is None and not c.attention_bias and not c.qk_norm


@pytest.mark.slow
def test_builtin_tokenizer_matches_transformers(smollm2, smollm2_path: Path) -> None:
    from transformers import AutoTokenizer

    ref = AutoTokenizer.from_pretrained(smollm2_path.parent, gguf_file=smollm2_path.name)
    tok = smollm2.tokenizer
    for text in TEXTS:
        ids = tok.encode(text, add_special_tokens=False)
        assert ids == ref.encode(text, add_special_tokens=False), text
        assert tok.decode(ids, skip_special_tokens=False) == text
    assert tok.encode("<|im_start|>", add_special_tokens=False) == [1]
    assert (tok.bos_token, tok.eos_token, tok.add_bos_token) == ("<|im_start|>", "<|im_end|>", False)
    assert tok.stop_token_ids == {2} and smollm2.generation_defaults["eos_token_id"] == 2
    assert tok.chat_template == inspect_gguf(smollm2_path)["chat_template"]


@pytest.mark.slow
def test_builtin_tokenizer_survives_export(smollm2, tmp_path: Path) -> None:
    """A real 49k byte-level vocab (smollm pre-tokenizer, control tokens, chat template) through write_gguf."""
    config, tensors = _checkpoint(_hf_model("llama", smollm2.config.vocab_size, hidden_size=32, intermediate_size=32,
                                            num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1))
    tok = load_gguf(write_gguf(config, tensors, smollm2.tokenizer, tmp_path / "s.gguf")).tokenizer
    for text in TEXTS:
        assert tok.encode(text, add_special_tokens=False) == smollm2.tokenizer.encode(text, add_special_tokens=False)
    for field in ("bos_token", "eos_token", "chat_template", "add_bos_token", "stop_token_ids", "vocab_size"):
        assert getattr(tok, field) == getattr(smollm2.tokenizer, field), field


# ---------------------------------------------------------------- errors


def _assert_one_line_error(exc: pytest.ExceptionInfo, path: Path) -> None:
    message = str(exc.value)
    assert "\n" not in message and path.name in message, message


@pytest.mark.slow
@pytest.mark.parametrize("keep", [0.5, 0.001], ids=["data-cut", "header-cut"])
def test_truncated_file(keep: float, smollm2_path: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    data = smollm2_path.read_bytes()
    cut.write_bytes(data[: int(len(data) * keep)])
    for fn in (inspect_gguf, load_gguf):
        with pytest.raises(ModelFormatError) as exc:
            fn(cut)
        _assert_one_line_error(exc, cut)
    assert "truncated" in str(exc.value)


def test_random_bytes_missing_and_empty(tmp_path: Path) -> None:
    noise = tmp_path / "noise.gguf"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    for path in (noise, tmp_path / "missing.gguf", empty):
        with pytest.raises(ModelFormatError) as exc:
            load_gguf(path)
        _assert_one_line_error(exc, path)


def test_bad_magic_and_corrupt_header(tiny_tokenizer: Tokenizer, tmp_path: Path) -> None:
    config, tensors = _checkpoint(_hf_model("llama", tiny_tokenizer.vocab_size))
    good = write_gguf(config, tensors, tiny_tokenizer, tmp_path / "good.gguf").read_bytes()
    bad_magic = tmp_path / "magic.gguf"
    bad_magic.write_bytes(b"GGML" + good[4:])
    corrupt = tmp_path / "corrupt.gguf"  # first key's length field says ~2**56 bytes
    corrupt.write_bytes(good[:24] + b"\xff" * 8 + good[32:])
    for path, words in ((bad_magic, "not a GGUF"), (corrupt, "corrupt")):
        with pytest.raises(ModelFormatError, match=words) as exc:
            load_gguf(path)
        _assert_one_line_error(exc, path)


def _letters_vocab(writer: gguf.GGUFWriter) -> int:
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([chr(ord("a") + i) for i in range(8)])
    return 8


def _write_minimal(path: Path, arch: str, tensor_type: gguf.GGMLQuantizationType,
                   add_vocab: Callable[[gguf.GGUFWriter], int] = _letters_vocab) -> Path:
    """A hand-made GGUF: llama-style metadata, no layers, a token embedding of the given type."""
    writer = gguf.GGUFWriter(path, arch)
    for key, value in (("block_count", 0), ("embedding_length", 32), ("feed_forward_length", 64),
                       ("attention.head_count", 2), ("context_length", 128)):
        writer.add_uint32(f"{arch}.{key}", value)
    vocab_size = add_vocab(writer)
    w = np.random.default_rng(0).standard_normal((vocab_size, 32)).astype(np.float32)
    data = gguf.quants.quantize(w, tensor_type) if tensor_type != gguf.GGMLQuantizationType.F32 else w
    writer.add_tensor("token_embd.weight", data, raw_dtype=tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_sentencepiece_vocab_matches_sentencepiece(tmp_path: Path) -> None:
    """`tokenizer.ggml.model == "llama"` (TinyLlama, Llama 2): a Llama-style sentencepiece BPE model (identity
    normalization, dummy prefix, byte fallback) stored the way convert_hf_to_gguf stores it, against sentencepiece."""
    import io

    import sentencepiece

    corpus = [t for t in TEXTS if t.strip()] * 20 + ["the cat sat on the mat", "hello there general kenobi"] * 20
    proto = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=proto, model_type="bpe", vocab_size=400, byte_fallback=True,
        normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=True, split_digits=True,
        allow_whitespace_only_pieces=True, character_coverage=1.0, minloglevel=2)
    sp = sentencepiece.SentencePieceProcessor(model_proto=proto.getvalue())
    ids = range(sp.get_piece_size())

    def add_vocab(writer: gguf.GGUFWriter) -> int:
        writer.add_tokenizer_model("llama")
        writer.add_token_list([sp.id_to_piece(i) for i in ids])
        writer.add_token_scores([sp.get_score(i) for i in ids])
        kinds = [2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 6 if sp.is_byte(i) else 1 for i in ids]
        writer.add_token_types(kinds)  # 2 unknown, 3 control, 6 byte, 1 normal
        writer.add_unk_token_id(sp.unk_id())
        writer.add_bos_token_id(sp.bos_id())
        writer.add_eos_token_id(sp.eos_id())
        return len(ids)

    tok = load_gguf(_write_minimal(tmp_path / "spm.gguf", "llama", gguf.GGMLQuantizationType.F32, add_vocab)).tokenizer
    for text in [*TEXTS, "  two leading spaces", "unseen ẞ and Ω use byte fallback"]:
        ours = tok.encode(text, add_special_tokens=False)
        assert ours == sp.encode(text), text
        assert tok.decode(ours) == sp.decode(ours) == text
    assert tok.add_bos_token and tok.encode("hi")[0] == sp.bos_id()  # llama.cpp's default for this vocab type
    assert (tok.bos_token, tok.eos_token) == ("<s>", "</s>")


def test_unsupported_architecture(tmp_path: Path) -> None:
    path = _write_minimal(tmp_path / "phi.gguf", "phi3", gguf.GGMLQuantizationType.F32)
    with pytest.raises(UnsupportedArchitectureError, match="phi3.*llama, qwen2, qwen3") as exc:
        load_gguf(path)
    _assert_one_line_error(exc, path)
    assert inspect_gguf(path)["arch"] == "phi3"  # inspecting still works


def test_unsupported_tensor_type(tmp_path: Path) -> None:
    path = _write_minimal(tmp_path / "q51.gguf", "llama", gguf.GGMLQuantizationType.Q5_1)
    assert load_gguf(_write_minimal(tmp_path / "ok.gguf", "llama", gguf.GGMLQuantizationType.F32)).tensors
    with pytest.raises(ModelFormatError, match=r"token_embd\.weight.*Q5_1") as exc:
        load_gguf(path)
    _assert_one_line_error(exc, path)



def test_file_type_names_and_block_sizes_match_gguf() -> None:
    """The loader names general.file_type and sizes tensors from its own tables (no `gguf` import on the load
    path); they say what gguf-py says."""
    from athanor.models.gguf import _FILE_TYPES
    from athanor.nn.dequant import GGML_TYPES, byte_size

    for value, name in _FILE_TYPES.items():
        assert gguf.LlamaFileType(value).name.removeprefix("MOSTLY_").removeprefix("ALL_") == name
    for ggml_type, (name, block, size) in GGML_TYPES.items():
        qtype = gguf.GGMLQuantizationType(ggml_type)
        assert qtype.name == name and gguf.GGML_QUANT_SIZES[qtype] == (block, size)
        assert byte_size(ggml_type, 4096) == 4096 // block * size
    assert byte_size(int(gguf.GGMLQuantizationType.Q2_K), 512) == 2 * gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q2_K][1]


def test_loading_the_builtin_does_not_import_gguf_py(smollm2_path: Path) -> None:
    import os
    import subprocess
    import sys

    code = ("import sys; from athanor.models.gguf import load_gguf; c = load_gguf(sys.argv[1], keep_blocks=True); "
            "print(c.info['quantization'], 'gguf' in sys.modules, 'sentencepiece' in sys.modules)")
    root = str(Path(__file__).parents[2])
    out = subprocess.run([sys.executable, "-c", code, str(smollm2_path)], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": root}, check=True).stdout.split()
    assert out == ["Q4_1", "False", "False"], out
