"""One in-process smollm2 ChatModel per test session, shared by tests/llm and tests/agent (loading costs seconds),
and `one_torch_thread`: on 2 shared cores, 2 intra-op threads made an agent run 7x slower (28.7 s vs 4.2 s
measured 2026-11-23 with the machine busy), so the tests that generate run with one."""

from __future__ import annotations

import contextlib
import functools


@functools.lru_cache(maxsize=1)
def smollm2():
    from athanor.llm.base import load_chat_model

    return load_chat_model("smollm2")


@contextlib.contextmanager
def one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
