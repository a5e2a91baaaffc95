"""Where a loaded GGUF model's resident memory goes, stage by stage, in one fresh process.

    cd benchmarks && PYTHONPATH=.. python audit_memory.py [--model smollm2|gemma3|PATH] [--threads 2] [--trim]

Stages: after `import torch`, after importing athanor, after LLM.load, a 44-token prompt + 4 tokens (warm-up),
the same + 64 tokens, a ~400-token prompt (prefill), the same + 64 tokens. At each: VmRSS, RssAnon, RssFile and
VmHWM (/proc/self/status, MiB) and glibc's heap (mallinfo2: arena, mmapped, in use, free), then the KV blocks the
runner wrote, and the mappings that grew since athanor was imported (/proc/self/smaps: [heap], [anon], libraries,
the GGUF file). `--trim` calls malloc_trim before each reading (what freed heap glibc still held). Memory numbers
do not depend on the machine's load. Not a test (tests/nn/test_memory_real.py, test_prefill_slices.py are).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import sys

PROMPT = "The history of the printing press begins in"
LONG_PROMPT = " ".join(["The quick brown fox jumps over the lazy dog."] * 40)  # ~400 tokens of prefill
GEMMA = "/work/lfrun/gemma/gemma-3-270m-q4_k_m.gguf"


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                                               "uordblks", "fordblks", "keepcost")]


_LIBC = ctypes.CDLL("libc.so.6")
_LIBC.mallinfo2.restype = _MallInfo2


def status() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = int(rest.split()[0]) // 1024
    m = _LIBC.mallinfo2()
    out.update(heap=m.arena >> 20, mmapped=m.hblkhd >> 20, used=m.uordblks >> 20, free=m.fordblks >> 20)
    return out


def smaps() -> dict[str, int]:
    """Resident KiB per mapping name ([heap], [anon], a file's path)."""
    out: dict[str, int] = {}
    name = None
    with open("/proc/self/smaps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 5 and "-" in parts[0] and not parts[0].endswith(":"):
                name = parts[5] if len(parts) > 5 else "[anon]"
            elif parts[0] == "Rss:":
                out[name] = out.get(name, 0) + int(parts[1])
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--trim", action="store_true")
    args = ap.parse_args()
    stages = []

    def mark(name):
        if args.trim:
            gc.collect()
            _LIBC.malloc_trim(0)
        stages.append((name, status()))

    import torch

    torch.set_num_threads(args.threads)
    mark("import torch")
    from athanor.engine.config import EngineConfig
    from athanor.runtime.llm import LLM

    mark("import athanor")
    before = smaps()
    path = {"gemma3": GEMMA}.get(args.model, args.model)
    llm = LLM.load(path, EngineConfig(kv_cache_bytes=64 * 2**20))
    mark("load")

    def run(prompt, n):
        return llm.generate([prompt], {"max_tokens": n, "temperature": 0, "ignore_eos": True})[0]

    run(PROMPT, 4)
    mark("prompt + 4")
    run(PROMPT, 64)
    mark("prompt + 64")
    n = run(LONG_PROMPT, 1).num_prompt_tokens
    mark(f"prefill {n}")
    run(LONG_PROMPT, 64)
    mark(f"prefill {n} + 64")
    print(f"| stage | VmRSS | RssAnon | RssFile | VmHWM | heap | mmapped | in use | free |\n|{'---|' * 9}")
    for name, s in stages:
        print(f"| {name} | {s['VmRSS']} | {s['RssAnon']} | {s['RssFile']} | {s['VmHWM']} | {s['heap']} | "
              f"{s['mmapped']} | {s['used']} | {s['free']} |")
    r = llm.engine.runner
    print(f"\nKV blocks written {r.num_zeroed_blocks} x {r.block_bytes / 2**10:.0f} KiB = "
          f"{r.num_zeroed_blocks * r.block_bytes / 2**20:.1f} MiB (pool {r.num_allocated_blocks} blocks)")
    after = smaps()
    grown = sorted(((after.get(k, 0) - before.get(k, 0), k) for k in after), reverse=True)
    print("\nmappings grown since athanor was imported (MiB):")
    for kib, name in grown:
        if kib >= 1024:
            print(f"  {kib / 1024:7.1f}  {name}")


if __name__ == "__main__":
    sys.exit(main())
