"""Pick the constrained-decoding library by measurement: llguidance vs xgrammar vs outlines-core on SmolLM2's vocab.

For each library: import time (and whether it drags in transformers, which the inference path must not
import), one-off tokenizer set-up, grammar compile time per schema, and the mean time to compute the
allowed-token mask per generated token while walking a valid answer token by token. Checks on the way
that every library accepts the valid answer (a library that rejects it is reported, not timed).

    python benchmarks/bench_grammar.py            # needs llguidance, xgrammar, outlines-core installed
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

SCHEMAS = {
    "json_object": ({"type": "object"}, {"answer": "Paris", "n": 3}),
    "person": ({"type": "object", "properties": {
        "name": {"type": "string"}, "age": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "role": {"enum": ["admin", "user", "guest"]}},
        "required": ["name", "age", "tags", "role"], "additionalProperties": False},
        {"name": "Ada Lovelace", "age": 36, "tags": ["math", "engines"], "role": "admin"}),
    "tool_call": ({"type": "object", "properties": {
        "name": {"const": "calculator"},
        "arguments": {"type": "object", "properties": {"expression": {"type": "string"}},
                      "required": ["expression"], "additionalProperties": False}},
        "required": ["name", "arguments"], "additionalProperties": False},
        {"name": "calculator", "arguments": {"expression": "12*(3+4)"}}),
}


def import_cost(module: str) -> tuple[float, bool]:
    code = f"import sys,time;t=time.time();import {module};print(time.time()-t, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), out[1] == "True"


def byte_vocab(tok) -> list[bytes]:
    """Each token id's bytes (byte-level BPE: map the GPT-2 unicode alphabet back to bytes)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    dec = {chr(c): b for b, c in zip(bs, cs)}
    vocab = []
    for i in range(tok.vocab_size):
        piece = tok.id_to_token(i) or ""
        vocab.append(bytes(dec[ch] for ch in piece) if all(ch in dec for ch in piece) else piece.encode())
    return vocab


def walk_llguidance(tok, schema, answer_ids, eos):
    import llguidance
    import numpy as np
    t = time.perf_counter()
    lt = llguidance.LLTokenizer(tok.backend.to_str(), eos_token=eos)
    setup = time.perf_counter() - t
    t = time.perf_counter()
    grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, defaults={"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "})
    m = llguidance.LLMatcher(lt, grammar)
    compile_s = time.perf_counter() - t
    mask = np.zeros(((lt.vocab_size + 31) // 32,), dtype=np.int32)
    times, ok = [], True
    for i in answer_ids + [eos]:
        t = time.perf_counter()
        m.unsafe_compute_mask_ptr(mask.ctypes.data, mask.nbytes)
        times.append(time.perf_counter() - t)
        allowed = (mask[i // 32] >> (i % 32)) & 1
        ok = ok and bool(allowed) and m.consume_token(i)
    return setup, compile_s, times, ok


def walk_xgrammar(tok, schema, answer_ids, eos):
    import torch
    import xgrammar as xg
    t = time.perf_counter()
    info = xg.TokenizerInfo(byte_vocab(tok), vocab_type=xg.VocabType.BYTE_LEVEL, stop_token_ids=[eos])
    compiler = xg.GrammarCompiler(info, max_threads=1)
    setup = time.perf_counter() - t
    t = time.perf_counter()
    m = xg.GrammarMatcher(compiler.compile_json_schema(json.dumps(schema), any_whitespace=False))
    compile_s = time.perf_counter() - t
    bitmask = xg.allocate_token_bitmask(1, info.vocab_size)
    times, ok = [], True
    for i in answer_ids + [eos]:
        t = time.perf_counter()
        m.fill_next_token_bitmask(bitmask)
        times.append(time.perf_counter() - t)
        allowed = bool((bitmask[0, i // 32].item() >> (i % 32)) & 1)
        ok = ok and allowed and m.accept_token(i)
    del torch
    return setup, compile_s, times, ok


def walk_outlines(tok, schema, answer_ids, eos):
    import outlines_core as oc
    t = time.perf_counter()
    vocab: dict[bytes, list[int]] = {}
    for i, b in enumerate(byte_vocab(tok)):
        if i != eos and b:
            vocab.setdefault(b, []).append(i)
    voc = oc.Vocabulary(eos, vocab)
    setup = time.perf_counter() - t
    t = time.perf_counter()
    regex = oc.json_schema.build_regex_from_schema(json.dumps(schema), r"[ ]?")
    index = oc.Index(regex, voc)
    guide = oc.Guide(index)
    compile_s = time.perf_counter() - t
    times, ok = [], True
    for i in answer_ids + [eos]:
        t = time.perf_counter()
        allowed = guide.get_tokens()
        times.append(time.perf_counter() - t)
        ok = ok and i in allowed
        if i != eos and ok:
            guide.advance(i)
    return setup, compile_s, times, ok


def main() -> None:
    sys.path.insert(0, ".")
    from athanor.models.loader import load_checkpoint
    from tests.conftest import builtin_gguf_path

    tok = load_checkpoint(builtin_gguf_path()).tokenizer
    eos = tok.token_to_id("<|im_end|>")
    print(f"vocab {tok.vocab_size}; eos {eos}\n")
    print("| library | import s | imports transformers | tokenizer set-up s | schema | compile ms | mask µs/token mean | max | accepts |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, module, walk in (("llguidance", "llguidance", walk_llguidance), ("xgrammar", "xgrammar", walk_xgrammar),
                               ("outlines-core", "outlines_core", walk_outlines)):
        try:
            imp, tf = import_cost(module)
        except subprocess.CalledProcessError:
            print(f"| {name} | not installed |")
            continue
        for sname, (schema, answer) in SCHEMAS.items():
            ids = tok.encode(json.dumps(answer, separators=(", ", ": ")), add_special_tokens=False)
            setup, comp, times, ok = walk(tok, schema, ids, eos)
            mean = sum(times) / len(times) * 1e6
            print(f"| {name} | {imp:.2f} | {tf} | {setup:.2f} | {sname} | {comp * 1e3:.1f} | {mean:.0f} | "
                  f"{max(times) * 1e6:.0f} | {ok} |")


if __name__ == "__main__":
    main()
