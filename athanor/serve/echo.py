"""`echo` on /v1/completions: the prompt comes back in front of the completion, with its own log-probabilities.

This is what lm-evaluation-harness's `local-completions` sends for log-likelihood tasks (multiple choice,
perplexity): `echo: true, logprobs: k, max_tokens: 1`, then it sums `token_logprobs[ctxlen:-1]`. The prompt's
log-probabilities come from one cache-free forward over the prompt (`LlamaModel.hidden_states`, as embeddings do:
no KV slot written, so it runs beside the engine thread): token t's logprob is log softmax of the logits at t-1.
The first prompt token has none (None, as OpenAI and vLLM answer). Streamed (`echo_stream`), the prompt is the first
chunk of each choice. Not for generation (the engine does that).
"""

from __future__ import annotations

import json

from athanor.runtime.async_engine import in_own_thread  # not a pooled thread: it would keep an OpenMP pool


def prompt_logprobs(llm, ids: list[int], top: int) -> list[tuple[float | None, list[tuple[int, float]]]]:
    """(logprob of ids[t] given ids[:t], top-`top` (id, logprob) at t) per prompt token; (None, []) for t = 0."""
    import torch

    model = llm.engine.runner.model
    if len(ids) < 2:
        return [(None, [])] * len(ids)
    hidden = model.hidden_states(torch.tensor(ids[:-1], dtype=torch.long, device=llm.engine.runner.device))
    with torch.inference_mode():
        logprobs = torch.log_softmax(model.lm_head(hidden).float(), dim=-1)  # (N-1, V)
    targets = torch.tensor(ids[1:], dtype=torch.long, device=logprobs.device)
    chosen = logprobs.gather(1, targets[:, None])[:, 0].tolist()
    out: list[tuple[float | None, list[tuple[int, float]]]] = [(None, [])]
    if top > 0:
        values, indices = logprobs.topk(top, dim=-1)
        tops = [list(zip(i, v)) for i, v in zip(indices.tolist(), values.tolist())]
    else:
        tops = [[] for _ in chosen]
    out += list(zip(chosen, tops))
    return out


async def add_echo(response: dict, gens, llm, num_logprobs: int | None) -> None:
    """Prefix every choice of a finished text_completion response with its prompt (text, and logprobs when asked);
    usage is unchanged (the prompt was already counted)."""
    tokenizer = llm.tokenizer
    by_index = {g.index: g for g in gens}
    scored: dict[tuple, list] = {}
    for choice in response["choices"]:
        ids = by_index[choice["index"]].prompt_ids
        prompt_text = tokenizer.decode(ids, skip_special_tokens=False)
        choice["text"] = prompt_text + choice["text"]
        if num_logprobs is None:
            continue
        key = tuple(ids)
        if key not in scored:  # n choices of one prompt share its scores
            scored[key] = await in_own_thread(prompt_logprobs, llm, ids, num_logprobs)
        choice["logprobs"] = _merge(_prompt_block(scored[key], ids, tokenizer), choice["logprobs"])


def _prompt_block(scores: list, ids: list[int], tokenizer) -> dict:
    def text(t: int) -> str:
        return tokenizer.decode([t], skip_special_tokens=False)

    tokens = [text(t) for t in ids]
    tops = [None if lp is None else {text(i): v for i, v in top} for lp, top in scores]
    return {"tokens": tokens, "token_logprobs": [lp for lp, _ in scores], "top_logprobs": tops,
            "text_offset": _offsets(tokens, 0)}


def _merge(prompt: dict, completion: dict | None) -> dict:
    completion = completion or {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    shift = sum(len(t) for t in prompt["tokens"])
    return {"tokens": prompt["tokens"] + completion["tokens"],
            "token_logprobs": prompt["token_logprobs"] + completion["token_logprobs"],
            "top_logprobs": prompt["top_logprobs"] + completion["top_logprobs"],
            "text_offset": prompt["text_offset"] + [o + shift for o in completion["text_offset"]]}


def _offsets(tokens: list[str], start: int) -> list[int]:
    out, pos = [], start
    for t in tokens:
        out.append(pos)
        pos += len(t)
    return out


async def echo_stream(lines, gens, llm, num_logprobs: int | None, meta: dict, include_usage: bool):
    """`echo` with `stream` (as vLLM streams it): one text_completion chunk per choice carrying its prompt (and the
    prompt's logprobs when asked) goes before the completion's own chunks `lines`."""
    tokenizer = llm.tokenizer
    scored: dict[tuple, list] = {}
    for g in sorted(gens, key=lambda g: g.index):
        choice = {"index": g.index, "text": tokenizer.decode(g.prompt_ids, skip_special_tokens=False),
                  "logprobs": None, "finish_reason": None}
        if num_logprobs is not None:
            key = tuple(g.prompt_ids)
            if key not in scored:
                scored[key] = await in_own_thread(prompt_logprobs, llm, g.prompt_ids, num_logprobs)
            choice["logprobs"] = _prompt_block(scored[key], g.prompt_ids, tokenizer)
        chunk = meta | {"object": "text_completion", "choices": [choice]} | ({"usage": None} if include_usage else {})
        yield f"data: {json.dumps(chunk)}\n\n"
    async for line in lines:
        yield line
