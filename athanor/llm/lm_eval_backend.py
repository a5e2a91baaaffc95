"""athanor's engine as an lm-evaluation-harness model backend, in-process: `lm_eval.simple_evaluate(model=
AthanorLM("smollm2"), tasks=[...])`, `athanor eval MODEL --tasks NAME`, or lm-eval's own command line through
`python -m athanor.llm.lm_eval_backend run --model athanor --model_args model=smollm2 --tasks ...` (lm-eval finds
models only in its registry, which this module joins as "athanor" when imported).

The model is the process registry's (runtime/registry.py), so weights load once and generation shares the engine
with everything else in the process:
- loglikelihood: lm-eval splits (context, continuation) into tokens (TemplateLM._encode_pair); each distinct
  sequence gets one cache-free forward (`LlamaModel.hidden_states`, as `athanor serve` scores `echo` prompts and
  `athanor perplexity` scores windows) and the continuation's log-probabilities are summed; `is_greedy` is
  whether the argmax reproduces the continuation. Longest first, identical sequences scored once.
- loglikelihood_rolling: lm-eval's own rolling windows (utils.get_rolling_token_windows), scored the same way.
- generate_until: every request submitted at once from a thread pool to the shared AsyncEngine, so the engine
  batches them; greedy unless the task asks to sample; `until` strings are the requests' stop strings.
Not for: OpenAI-evals-style JSONL evals (ops/evals.py), or lm-eval over HTTP (`local-completions` against
`athanor serve`, tested in tests/e2e/test_lm_eval.py).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import lm_eval.models  # noqa: F401 - lm-eval's own backends first: it fills its registry only while it is empty
from lm_eval import utils as lm_utils
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model

DEFAULT_MAX_GEN_TOKS = 256


@register_model("athanor")
class AthanorLM(TemplateLM):
    """model_args: model=NAME (a store name, .gguf file or HF dir; `pretrained=` is accepted too), max_length=N
    (default: the engine's context), concurrency=N (generation requests in flight, default 64), prefix_token_id=N
    (default: BOS, else EOS)."""

    def __init__(self, model: str | None = None, pretrained: str | None = None, max_length: int | None = None,
                 concurrency: int = 64, prefix_token_id: int | None = None, batch_size=None, max_batch_size=None,
                 device=None, **_ignored) -> None:
        super().__init__()
        from athanor.runtime.handle import ModelHandle

        name = model or pretrained
        if not name:
            raise ValueError("the athanor lm-eval backend needs model_args model=NAME (a store name or a path)")
        self.handle = ModelHandle.open(str(name))
        self.name = str(name)
        self._max_length = int(max_length) if max_length else None
        self.concurrency = int(concurrency)
        self._prefix_token_id = int(prefix_token_id) if prefix_token_id is not None else None

    # --- what lm-eval asks of a TemplateLM -------------------------------------------------------------------

    @property
    def tokenizer(self):
        return self.handle.llm.tokenizer

    @property
    def eot_token_id(self) -> int:
        tok = self.tokenizer
        return tok.eos_token_id if tok.eos_token_id is not None else min(tok.stop_token_ids)

    @property
    def prefix_token_id(self) -> int:
        """What an empty context and the first rolling window condition on: BOS, else EOS (lm-eval's HF rule)."""
        if self._prefix_token_id is not None:
            return self._prefix_token_id
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.eot_token_id

    @property
    def max_length(self) -> int:
        return self._max_length or self.handle.llm.engine.max_model_len

    @property
    def tokenizer_name(self) -> str:
        return f"athanor/{self.name}"

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        return self.tokenizer.encode(string, add_special_tokens=add_special_tokens is not False)

    def tok_decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids)

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        if chat_template is False or chat_template is None:
            return None
        return self.tokenizer.chat_template or ""

    def apply_chat_template(self, chat_history: list[dict], add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(chat_history, add_generation_prompt=add_generation_prompt)

    def close(self) -> None:
        self.handle.close()

    # --- scoring -------------------------------------------------------------------------------------------

    def _score(self, context_ids: list[int], continuation_ids: list[int]) -> tuple[float, bool]:
        """(sum of log p(continuation | context), is the continuation the greedy one?) from one forward."""
        import torch

        whole = (context_ids + continuation_ids)[-(self.max_length + 1):]
        n = len(continuation_ids)
        llm = self.handle.llm
        model = llm.engine.runner.model
        hidden = model.hidden_states(torch.tensor(whole[:-1], dtype=torch.long, device=llm.engine.runner.device))
        with torch.inference_mode():
            logprobs = torch.log_softmax(model.lm_head(hidden[-n:]).float(), dim=-1)  # (n, V): the continuation's
        target = torch.tensor(whole[-n:], dtype=torch.long, device=logprobs.device)
        total = logprobs.gather(1, target[:, None]).sum().item()
        return total, bool((logprobs.argmax(dim=-1) == target).all().item())

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        """requests: ((context, continuation) or None, context ids, continuation ids) -> (logprob, is_greedy)."""
        order = sorted(range(len(requests)), key=lambda i: -len(requests[i][1]) - len(requests[i][2]))
        done: dict[tuple, tuple[float, bool]] = {}
        out: list[tuple[float, bool] | None] = [None] * len(requests)
        for i in order:
            key, ctx, cont = requests[i]
            seq = (tuple(ctx), tuple(cont))
            if seq not in done:
                done[seq] = self._score(list(ctx), list(cont))
            out[i] = done[seq]
            if key is not None:
                self.cache_hook.add_partial("loglikelihood", key, out[i])
        return out  # type: ignore[return-value]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        results = []
        for (string,) in [r.args for r in requests]:
            windows = map(lm_utils.make_disjoint_window, lm_utils.get_rolling_token_windows(
                token_list=self.tok_encode(string), prefix_token=self.prefix_token_id, max_seq_len=self.max_length,
                context_len=1))
            scores = self._loglikelihood_tokens([(None, ctx, cont) for ctx, cont in windows])
            total = sum(s for s, _ in scores)
            self.cache_hook.add_partial("loglikelihood_rolling", (string,), total)
            results.append(total)
        return results

    # --- generation ----------------------------------------------------------------------------------------

    def _options(self, gen_kwargs: dict) -> dict:
        kw = dict(gen_kwargs or {})
        until = kw.pop("until", None)
        until = [until] if isinstance(until, str) else list(until or [])
        max_tokens = int(kw.pop("max_gen_toks", DEFAULT_MAX_GEN_TOKS))
        sample = bool(kw.pop("do_sample", False))
        temperature = float(kw.pop("temperature", 0.0)) if sample else 0.0
        options = {"temperature": temperature, "max_tokens": max_tokens, "stop": until or None}
        for k in ("top_p", "top_k", "seed"):
            if k in kw and sample:
                options[k] = kw[k]
        return {k: v for k, v in options.items() if v is not None}

    def _generate_one(self, context: str, gen_kwargs: dict) -> str:
        options = self._options(gen_kwargs)
        budget = max(1, self.max_length - options["max_tokens"])
        prompt_ids = self.tok_encode(context)[-budget:]  # keep the end of an overlong context, as lm-eval's HF does
        *_, last = self.handle.stream(prompt_ids, options)
        text = last.completion.text
        for stop in options.get("stop", []):  # the engine stops at them; a stop inside the last token is cut here
            text = text.split(stop)[0]
        return text

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        args = [r.args for r in requests]
        if not args:
            return []
        with ThreadPoolExecutor(max_workers=max(1, min(self.concurrency, len(args)))) as pool:
            outs = list(pool.map(lambda a: self._generate_one(a[0], a[1]), args))
        for a, text in zip(args, outs):
            self.cache_hook.add_partial("generate_until", a, text)
        return outs


def evaluate(model: str, tasks: list[str], *, limit: int | None = None, include_path: str | None = None,
             log_samples: bool = True, **model_args) -> dict:
    """lm_eval.simple_evaluate with this backend on `model`; lm-eval's result dict (with samples when logged)."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    lm = AthanorLM(model, **model_args)
    try:
        return lm_eval.simple_evaluate(model=lm, tasks=tasks, limit=limit, log_samples=log_samples,
                                       task_manager=TaskManager(include_path=include_path))
    finally:
        lm.close()


if __name__ == "__main__":  # lm-eval's own command line, with "athanor" in its model registry
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()
