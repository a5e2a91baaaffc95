"""Model nodes of Dify's DSL: llm here; question-classifier and parameter-extractor (classify.py),
knowledge-retrieval (retrieval.py), agent and tool (agentic.py) register when this module is imported.

The llm node: Dify's `data` (model {provider, name, mode, completion_params}, prompt_template, context,
memory, structured output) -> one streamed request to the model Services resolves. Every text piece is
streamed to `[node_id, "text"]` (the engine routes it through answer nodes). Outputs: text, reasoning_content,
usage, finish_reason, and structured_output when enabled (the reply parsed as JSON and checked against the
schema; a reply that is not valid JSON for it fails the node, so the engine's error strategy applies).
Vision inputs are not sent (text-only models); the node says so in process_data.
Not for: prompt assembly details (prompting.py) or model lookup (services.py).
"""

from __future__ import annotations

import re

from athanor.workflow import prompting
from athanor.workflow.nodes.base import Node, NodeResult, RunContext, WorkflowNodeError, register
from athanor.workflow.prompting import model_shape_problems, process_data

_THINK = re.compile(r"<think[^>]*>(.*?)</think>", re.IGNORECASE | re.DOTALL)


@register
class LLMNode(Node):
    type = "llm"

    def check(self, app) -> list[str]:
        problems = model_shape_problems(self.data.get("model")) + prompting.template_problems(self.data)
        context = self.data.get("context") or {}
        if context.get("enabled") and not context.get("variable_selector"):
            problems.append("context is enabled but context.variable_selector is empty")
        if self.data.get("structured_output_enabled"):
            schema = (self.data.get("structured_output") or {}).get("schema")
            if not isinstance(schema, dict):
                problems.append("structured_output_enabled is set but structured_output.schema is not a JSON schema")
        return problems

    def run(self, ctx: RunContext) -> NodeResult:
        data, model_cfg = self.data, self.data.get("model") or {}
        context = prompting.context_text(ctx, data)
        messages = prompting.prompt_messages(ctx, data, context)
        schema = (data.get("structured_output") or {}).get("schema") if data.get("structured_output_enabled") else None
        if schema is not None:
            messages = _with_system(messages, prompting.structured_output_instruction(schema))
        model = ctx.services.chat_model(model_cfg)
        response, latency = prompting.call_model(ctx, model, messages, prompting.model_options(model_cfg),
                                                 stream_to=[self.id, "text"])
        usage = prompting.usage_dict(response.usage, latency)
        text, reasoning = response.text, ""
        if data.get("reasoning_format") == "separated":
            reasoning = "\n".join(m.strip() for m in _THINK.findall(text))
            text = _THINK.sub("", text).strip()
        outputs = {"text": text, "reasoning_content": reasoning, "usage": usage,
                   "finish_reason": response.finish_reason}
        if schema is not None:
            outputs["structured_output"] = parse_structured(text, schema)
        details = process_data(model_cfg, messages, usage, response.finish_reason)
        if (data.get("vision") or {}).get("enabled"):
            details["note"] = "vision is enabled in the DSL; files are not sent (text-only model)"
        return NodeResult(outputs, inputs={"#context#": context} if context else {}, process_data=details,
                          metadata={"total_tokens": usage["total_tokens"]})


def parse_structured(text: str, schema: dict) -> dict:
    """A reply -> the JSON object it holds, checked against the schema; WorkflowNodeError when it is not one."""
    value = prompting.extract_json(text)
    if not isinstance(value, dict):
        raise WorkflowNodeError(f"structured output: the model's reply is not a JSON object: {text[:120]!r}")
    problems = prompting.schema_problems(value, schema)
    if problems:
        raise WorkflowNodeError("structured output does not match the schema: " + "; ".join(problems[:5]))
    return value


def _with_system(messages: list[dict], paragraph: str) -> list[dict]:
    """Append a paragraph to the first system message, or put a system message first."""
    if messages and messages[0]["role"] == "system":
        return [{"role": "system", "content": f"{messages[0]['content']}\n\n{paragraph}"}, *messages[1:]]
    return [{"role": "system", "content": paragraph}, *messages]


from athanor.workflow.nodes import agentic, classify, retrieval  # noqa: F401  (register the other model nodes)
