"""LocalChatModel: the ChatModel protocol over athanor's own engine, in-process (no HTTP).

For: agents, workflows and RAG running a model in the same process (`load_chat_model("smollm2")`). The model comes
from the process's one registry (runtime/registry.py) and each request goes to its shared AsyncEngine: requests
from agents, workflows and HTTP clients are batched together, the weights are loaded once, and the model counts in
`athanor serve --max-memory`. It gets the model's full context (or `num_ctx` when given) with the KV cache for it.
Options are OpenAI / Ollama names (temperature, top_p, max_tokens, stop, seed, num_predict, ...) handed to
`LLM.sampling_params`, so unknown names raise the engine's one-line error.

Tools: `tools` are rendered into the prompt by the model's own chat template when it uses `tools` (so a
tool-trained model sees them in its trained format); for a template that ignores them (SmolLM2's), they are
listed as JSON in the system message instead, never silently dropped. The reply is searched for tool calls in
the Hermes/Qwen `<tool_call>` or Llama-3 JSON formats (tool_parsing.py); with tools, the text is delivered in
one piece at the end so call markup never leaks into streamed text. A model that writes calls in another
format returns them as text; the ReAct agent (agent/react.py) works with any model.
Every request is recorded as an `llm` span when tracing is on (llm/traced.py).
`embed` is `LLM.embed`: the L2-normalised mean of the model's last hidden states (what `athanor serve` answers on
/v1/embeddings). A generative model is not a trained sentence embedder; use a real embedder for RAG.
"""

from __future__ import annotations

from collections.abc import Iterator

from athanor.llm.base import ChatDelta, ChatResponse, Usage, collect
from athanor.llm.traced import traced_stream
from athanor.text.chat_format import adapt_to_template
from athanor.text.tool_parsing import parse_tool_calls


class LocalChatModel:
    def __init__(self, name: str, registry=None, defaults: dict | None = None) -> None:
        self.name = name
        self.registry = registry  # None: the process's registry at each call (`athanor serve`'s while it runs)
        self.defaults = dict(defaults or {})  # request options applied under each call's own
        self.num_ctx = self.defaults.pop("num_ctx", None)  # sizes the engine: goes to the registry, not the sampler

    @classmethod
    def load(cls, name_or_path: str, registry=None, **defaults) -> LocalChatModel:
        """A store name or a .gguf / HF-dir path -> model, loaded now (a bad name fails here); defaults are options."""
        model = cls(name_or_path, registry, defaults)
        with model._handle():
            pass
        return model

    @property
    def llm(self):
        """The loaded LLM (tokenizer, chat template, defaults) to inspect; requests go through `stream`."""
        with self._handle() as handle:
            return handle.llm

    def _handle(self):
        from athanor.runtime.handle import ModelHandle

        return ModelHandle.open(self.name, self.registry, num_ctx=self.num_ctx)

    def chat(self, messages: list[dict], *, tools: list[dict] | None = None, **options) -> ChatResponse:
        return collect(self.stream(messages, tools=tools, **options))

    def stream(self, messages: list[dict], *, tools: list[dict] | None = None, **options) -> Iterator[ChatDelta]:
        """Deltas of one request, recorded as an `llm` span (llm/traced.py)."""
        options = self.defaults | {k: v for k, v in options.items() if v is not None}
        return traced_stream(self.name, "athanor", messages, options, tools,
                             lambda span: self._stream(messages, tools, options, span))

    def _stream(self, messages: list[dict], tools: list[dict] | None, options: dict, span) -> Iterator[ChatDelta]:
        with self._handle() as llm:
            params = llm.sampling_params(options)
            messages, _ = adapt_to_template(llm.tokenizer, messages, tools)  # the format training uses
            prompt_ids = llm.chat_prompt(messages, tools=tools or None)
            for delta in llm.stream(prompt_ids, params):
                span.first_token()  # the engine's first token (with tools the text is held back to the end)
                if delta.completion is None:
                    if not tools:
                        yield ChatDelta(text=delta.text)
                    continue
                c = delta.completion
                usage = Usage(c.num_prompt_tokens, len(c.token_ids))
                if not tools:
                    yield ChatDelta(text=delta.text, finish_reason=c.finish_reason, usage=usage)
                    continue
                names = {t.get("function", t).get("name") for t in tools}
                text, calls = parse_tool_calls(c.text, names)
                yield ChatDelta(text=text, tool_calls=calls, finish_reason="tool_calls" if calls else c.finish_reason,
                                usage=usage)

    def embed(self, texts: list[str]) -> list[list[float]]:
        with self._handle() as llm:
            return llm.embed(texts)[0]
