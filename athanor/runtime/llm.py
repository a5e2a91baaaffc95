"""LLM: the text face of the engine. Loads a named model, renders chat templates, detokenizes, stops on strings.

The token engine (engine.py) stays text-free; this module puts text around it for the CLI and `LLM.generate`.
The async engine reuses `TextStream` so stop strings end a request in the engine the moment they appear.
Not for HTTP (serve/) or for talking to remote models (llm/).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Iterator

from athanor.engine.config import EngineConfig
from athanor.engine.engine import LLMEngine
from athanor.engine.sampling_params import SamplingParams
from athanor.errors import ContextLengthError
from athanor.runtime.memory import release_free_heap
from athanor.runtime.options import ENGINE_OPTIONS, params_from_options, sampling_only
from athanor.runtime.results import Completion, Delta

_GEN_CONFIG_KEYS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty")


class TextStream:
    """Per-request text state: incremental detokenizer + stop-string matcher."""

    def __init__(self, tokenizer, params: SamplingParams, prompt_ids: list[int]) -> None:
        from athanor.text.stop import StopMatcher
        from athanor.text.tokenizer import IncrementalDetokenizer

        self.detok = IncrementalDetokenizer(tokenizer, prompt_ids)
        self.stops = StopMatcher(params.stop)
        self.text = ""
        self.stopped = False  # a stop string was seen (even on the sequence's last token)

    def feed(self, token_ids: list[int], finished: bool) -> tuple[str, bool]:
        """New tokens -> (text safe to show now, hit a stop string?)."""
        raw = "".join(self.detok.push(t) for t in token_ids) + (self.detok.flush() if finished else "")
        out, stopped = self.stops.feed(raw)
        if finished and not stopped:
            out += self.stops.flush()
        self.text += out
        self.stopped = self.stopped or stopped
        return out, stopped


class LLM:
    def __init__(self, engine: LLMEngine, tokenizer, defaults: dict | None = None, system: str | None = None,
                 messages: list[dict] | None = None, name: str = "", load_seconds: float = 0.0, info: dict | None = None):
        self.engine, self.tokenizer = engine, tokenizer
        self.defaults = defaults or {}  # sampling options: generation_config, then Modelfile PARAMETERs
        self.system, self.messages = system, messages or []
        self.name, self.load_seconds, self.info = name, load_seconds, info or {}

    # --- loading -----------------------------------------------------------------------------------------

    @classmethod
    def load(cls, name: str, config: EngineConfig | None = None, **options: Any) -> "LLM":
        """A store name (`smollm2`) or a path (.gguf file / HF dir) -> ready LLM. `options` override defaults."""
        from athanor.models.store import Store

        t0 = time.perf_counter()
        manifest = Store().resolve(name)
        llm = cls.from_manifest(manifest, config, options)
        llm.load_seconds = time.perf_counter() - t0
        return llm

    @classmethod
    def from_manifest(cls, manifest, config: EngineConfig | None, options: dict) -> "LLM":
        from athanor.models.loader import load_checkpoint
        from athanor.models.lora import merge_adapters
        from athanor.nn.llama import build_model

        ckpt = load_checkpoint(manifest.weights, keep_blocks=not manifest.adapters)  # build_model decides their use
        if manifest.adapters:
            ckpt.tensors = merge_adapters(ckpt.tensors, manifest.adapters, ckpt.config)
        if manifest.template:
            ckpt.tokenizer.chat_template = manifest.template
        params = dict(manifest.parameters) | options
        config = dataclasses.replace(config) if config else EngineConfig()  # the caller's config stays as given
        if options.get("num_ctx") is not None:  # a caller's (a request's): refused when the cache cannot hold it
            config.max_model_len = check_num_ctx(options["num_ctx"], ckpt.config, config)
        elif params.get("num_ctx"):  # the Modelfile's: the engine caps it to the cache, as before
            config.max_model_len = int(params["num_ctx"])
        ckpt.config.max_position_embeddings = max(ckpt.config.max_position_embeddings, config.max_model_len)
        model = build_model(ckpt.config, ckpt.tensors, device=config.device, dtype=config.torch_dtype(),
                            weight_dtype=config.torch_weight_dtype(),
                            # merged adapters: the weights are no longer the file's blocks (re-quantizing them would
                            # round the LoRA deltas away), so auto/gguf keep the float path
                            quant=config.quant_plan(None if manifest.adapters else ckpt.info.get("quantization")))
        _fit_kv_to_context(config, model, ckpt.config.max_position_embeddings)
        engine = LLMEngine(model, config, eos_token_ids=set(ckpt.tokenizer.stop_token_ids))
        defaults = _generation_defaults(ckpt.generation_defaults) | {
            k: v for k, v in params.items() if k not in ENGINE_OPTIONS
        }
        llm = cls(engine, ckpt.tokenizer, defaults, manifest.system, manifest.messages, manifest.name,
                  info=ckpt.info)
        del ckpt, model  # the loader's temporaries (header, vocabulary lists, merges) are garbage now
        release_free_heap()  # ... and their pages go back to the system instead of staying in glibc's heap
        return llm

    @functools.cached_property
    def grammars(self):
        """The constrained-decoding compiler for this model's tokenizer (athanor.text.grammar), built on first use."""
        from athanor.text.grammar import Grammars

        return Grammars(self.tokenizer, sorted(self.engine.eos_token_ids))

    # --- requests ----------------------------------------------------------------------------------------

    def sampling_params(self, params: SamplingParams | dict | None = None) -> SamplingParams:
        """Model defaults, then the request's options; stop strings that are single special tokens become ids."""
        if isinstance(params, SamplingParams):
            return params
        sp = params_from_options(self.defaults, sampling_only(params or {}))
        for s in list(sp.stop):
            tid = self.tokenizer.token_to_id(s)
            if tid is not None and tid not in sp.stop_token_ids:
                sp.stop_token_ids.append(tid)  # `<|im_end|>` is skipped in decoded text: stop on its id
        return sp

    def chat_prompt(self, messages: list[dict], tools: list[dict] | None = None, **template_vars) -> list[int]:
        """`template_vars`: extra Jinja variables (enable_thinking, reasoning_effort), as transformers passes them."""
        msgs = list(messages)
        if self.system and not any(m.get("role") == "system" for m in msgs):
            msgs.insert(0, {"role": "system", "content": self.system})
        msgs[1 if msgs and msgs[0]["role"] == "system" else 0 : 0] = self.messages
        return self.tokenizer.encode_chat(msgs, tools=tools, **template_vars)

    def stream(self, prompt_ids: list[int], params: SamplingParams | dict | None = None) -> Iterator[Delta]:
        """Run one request alone, yielding text as it is produced (the CLI's path)."""
        sp = self.sampling_params(params)
        t0 = time.perf_counter()
        seq = self.engine.add_request(prompt_ids, sp)
        text = TextStream(self.tokenizer, sp, prompt_ids)
        try:
            while not seq.is_finished:
                for out in self.engine.step():
                    if out.request_id != seq.request_id:
                        continue
                    piece, stopped = text.feed(out.new_token_ids, out.finished)
                    if stopped:
                        self.engine.finish(seq.request_id, "stop")
                    if piece:
                        yield Delta(piece)
        finally:
            self.engine.abort(seq.request_id)  # a consumer that stops early frees the blocks
        yield Delta("", _completion(seq, text, t0))

    def generate(self, prompts: list[str] | str, params: SamplingParams | dict | None = None) -> list[Completion]:
        """Raw completion (no chat template) of several prompts batched together."""
        prompts = [prompts] if isinstance(prompts, str) else prompts
        sp = self.sampling_params(params)
        return self.generate_ids([self.tokenizer.encode(p) for p in prompts], sp)

    def chat(self, messages: list[dict], params: SamplingParams | dict | None = None) -> Completion:
        return self.generate_ids([self.chat_prompt(messages)], self.sampling_params(params))[0]

    def embed(self, inputs: list[str | list[int]], truncate: bool = False) -> tuple[list[list[float]], int]:
        """Texts (or token id lists) -> (L2-normalised mean-pooled last hidden states, tokens read).

        Mean pooling over every token of the final hidden state (after the last norm), as sentence embedders do;
        a generative model was not trained for this, so expect rough similarity, not a tuned embedder's. An input
        longer than the context is an error, or is cut to it when `truncate` (Ollama's /api/embed default)."""
        import torch

        model = self.engine.runner.model
        limit = self.engine.max_model_len
        out, total = [], 0
        for i, item in enumerate(inputs):
            ids = self.tokenizer.encode(item) if isinstance(item, str) else list(item)
            if not ids:
                raise ValueError(f"input {i} is empty: nothing to embed")
            if not all(0 <= t < model.config.vocab_size for t in ids):
                raise ValueError(f"input {i} has token ids outside the vocabulary [0, {model.config.vocab_size})")
            if len(ids) > limit:
                if not truncate:
                    raise ContextLengthError(f"input {i} is {len(ids)} tokens; the context holds {limit}")
                ids = ids[:limit]
            hidden = model.hidden_states(torch.tensor(ids, dtype=torch.long, device=self.engine.runner.device))
            vec = torch.nn.functional.normalize(hidden.mean(dim=0), dim=0)
            out.append(vec.tolist())
            total += len(ids)
        return out, total

    def generate_ids(self, prompt_ids: list[list[int]], sp: SamplingParams) -> list[Completion]:
        t0 = time.perf_counter()
        seqs = [self.engine.add_request(p, sp) for p in prompt_ids]
        streams = {s.request_id: TextStream(self.tokenizer, sp, p) for s, p in zip(seqs, prompt_ids)}
        while self.engine.has_unfinished():
            for out in self.engine.step():
                _, stopped = streams[out.request_id].feed(out.new_token_ids, out.finished)
                if stopped:
                    self.engine.finish(out.request_id, "stop")
        return [_completion(s, streams[s.request_id], t0) for s in seqs]


def scoring_model(name: str):
    """(model, tokenizer) built as `athanor run` builds it on the CPU, without an engine: for cache-free scoring
    (`athanor perplexity`, `athanor quantize --eval-text`); a quantized GGUF keeps its blocks."""
    from athanor.models.loader import load_checkpoint
    from athanor.models.store import Store
    from athanor.nn.llama import build_model

    config = EngineConfig()
    ckpt = load_checkpoint(Store().resolve(name).weights, keep_blocks=True)
    model = build_model(ckpt.config, ckpt.tensors, dtype=config.torch_dtype(), weight_dtype=config.torch_weight_dtype(),
                        quant=config.quant_plan(ckpt.info.get("quantization")))
    return model, ckpt.tokenizer


def float_model(name: str):
    """(model, tokenizer): the model's weights in float32 (quantized files dequantized), built for scoring and
    for collecting an importance matrix (models/imatrix_collect.py)."""
    from athanor.models.loader import load_checkpoint
    from athanor.models.store import Store
    from athanor.nn.llama import build_model

    ckpt = load_checkpoint(Store().resolve(name).weights)
    return build_model(ckpt.config, ckpt.tensors), ckpt.tokenizer


def _fit_kv_to_context(config: EngineConfig, model, max_position_embeddings: int) -> None:
    """A KV budget in bytes grows to hold one whole context (num_ctx, else the model's), so a small budget never
    silently shrinks the context; an explicit block count is kept as given."""
    from athanor.engine.model_runner import kv_bytes_per_token

    if config.num_kvcache_blocks:
        return
    context = config.max_model_len or max_position_embeddings
    blocks = -(-context // config.block_size) + 1
    need = blocks * config.block_size * kv_bytes_per_token(model.config, next(model.parameters()).dtype,
                                                          config.kv_cache_type)
    config.kv_cache_bytes = max(config.kv_cache_bytes, need)


def _completion(seq, text: TextStream, t0: float) -> Completion:
    end = time.perf_counter()
    first = seq.first_token_time or end
    reason = "stop" if text.stopped else (seq.finish_reason or "abort")
    return Completion(text.text, seq.output_token_ids, reason, seq.num_prompt_tokens,
                      seq.num_cached_tokens, seq.output_logprobs, first - t0, end - first)


def _generation_defaults(gen: dict) -> dict:
    """generation_config.json -> sampling options (greedy when it says do_sample false; as in transformers,
    repetition_penalty applies to greedy decoding too)."""
    if gen.get("do_sample") is False:
        return {"temperature": 0.0} | ({"repetition_penalty": gen["repetition_penalty"]} if "repetition_penalty" in gen else {})
    return {k: gen[k] for k in _GEN_CONFIG_KEYS if k in gen}


def check_num_ctx(num_ctx, model_config, config: EngineConfig) -> int:
    """A context size the KV cache can hold, checked before anything is allocated (the rotary tables and the
    cache grow with it): an integer >= 1 and at most the cache's tokens. Else a one-line AthanorError."""
    from athanor.engine.model_runner import kv_bytes_per_token
    from athanor.errors import AthanorError

    if isinstance(num_ctx, bool) or not isinstance(num_ctx, int) or num_ctx < 1:
        raise AthanorError(f"num_ctx must be an integer >= 1, got {num_ctx!r}")
    if config.num_kvcache_blocks:
        cache_tokens = config.num_kvcache_blocks * config.block_size
    else:
        cache_tokens = config.kv_cache_bytes // max(1, kv_bytes_per_token(model_config, config.torch_dtype(),
                                                                         config.kv_cache_type))
    if num_ctx > cache_tokens:
        raise AthanorError(f"num_ctx {num_ctx} is more than this server's KV cache holds ({cache_tokens} tokens); "
                           "ask for less or give the server a larger KV cache")
    return num_ctx
