"""Dify's "easy" apps (`chat`, `agent-chat`, `completion`) as the graph they amount to.

These apps carry a `model_config` instead of a workflow graph: a model, a prompt (`pre_prompt`, or the
advanced `chat_prompt_config` / `completion_prompt_config`), the user input form, optional knowledge
(`dataset_configs`) and, for agent-chat, `agent_mode` tools. Dify itself can convert them to workflows; this
module builds the same shape so one engine runs everything:

    chat        start -> [knowledge-retrieval] -> llm (memory, context) -> answer      (runs as advanced-chat)
    agent-chat  start -> [knowledge-retrieval] -> agent (tools, memory) -> answer      (runs as advanced-chat)
    completion  start -> [knowledge-retrieval] -> llm (context)         -> end{answer} (runs as workflow)

Prompt variables in Dify's simple syntax (`{{name}}`) become `{{#start.name#}}`; `{{#context#}}` is the
knowledge text (added in Dify's words when the prompt does not place it); `{{#query#}}` / `{{#histories#}}`
become `{{#sys.query#}}` / the memory block. The graph is built fresh on load; `raw` (what export writes back)
keeps the original model_config.
Not for: running (engine.py) or the DSL file itself (dsl.py).
"""

from __future__ import annotations

import re
from itertools import pairwise

from athanor.workflow.errors import WorkflowError

_SIMPLE_VAR = re.compile(r"\{\{([a-zA-Z_][a-zA-Z0-9_]{0,29})\}\}")
_FORM_TYPES = ("text-input", "paragraph", "select", "number", "checkbox", "file", "file-list", "json_object")
_CONTEXT_BLOCK = ("Use the following context as your learned knowledge, inside <context></context> XML tags.\n\n"
                  "<context>\n{{#context#}}\n</context>\n\n")
STRATEGIES = {"function_call": "function_calling", "react": "ReAct", "": "function_calling"}


def model_config_graph(doc: dict, source: str) -> dict:
    """The graph ({nodes, edges}) of a chat / agent-chat / completion app's `model_config`."""
    mode = doc["app"]["mode"]
    cfg = doc.get("model_config")
    if not isinstance(cfg, dict):
        raise WorkflowError(f"{source}: {mode} apps need a model_config section")
    model = cfg.get("model")
    if not isinstance(model, dict) or not model.get("name"):
        raise WorkflowError(f"{source}: model_config.model needs a provider and a name")
    variables = form_variables(cfg.get("user_input_form"))
    names = {v["variable"] for v in variables}
    nodes = [_node("start", "start", "Start", variables=variables)]
    chain = ["start"]
    datasets = dataset_ids(cfg)
    if datasets:
        nodes.append(_node("knowledge", "knowledge-retrieval", "Knowledge Retrieval", **_retrieval(cfg, datasets, mode)))
        chain.append("knowledge")
    memory = {"window": {"enabled": False, "size": 10}} if mode != "completion" else None
    if mode == "agent-chat":
        nodes.append(_node("agent", "agent", "Agent", **_agent(cfg, model, names, memory, bool(datasets))))
        chain.append("agent")
    else:
        nodes.append(_node("llm", "llm", "LLM", **_llm(cfg, model, names, memory, bool(datasets), mode)))
        chain.append("llm")
    last = chain[-1]
    if mode == "completion":
        nodes.append(_node("end", "end", "End", outputs=[{"variable": "answer", "value_selector": [last, "text"]}]))
        chain.append("end")
    else:
        nodes.append(_node("answer", "answer", "Answer", answer=f"{{{{#{last}.text#}}}}", variables=[]))
        chain.append("answer")
    edges = [{"id": f"{a}-source-{b}", "source": a, "sourceHandle": "source", "target": b, "targetHandle": "target"}
             for a, b in pairwise(chain)]
    return {"nodes": nodes, "edges": edges}


def _node(node_id: str, type_: str, title: str, **data) -> dict:
    return {"id": node_id, "type": "custom", "data": {"type": type_, "title": title, **data}}


def form_variables(form) -> list[dict]:
    """Dify's `user_input_form` ([{"text-input": {label, variable, required, ...}}, ...]) -> start variables."""
    out = []
    for item in form or []:
        if not isinstance(item, dict) or len(item) != 1:
            continue
        (kind, spec), = item.items()
        if kind not in _FORM_TYPES or not isinstance(spec, dict) or not spec.get("variable"):
            continue  # external_data_tool entries and the like: nothing to ask the user for
        var = {"variable": spec["variable"], "label": spec.get("label") or spec["variable"], "type": kind,
               "required": bool(spec.get("required"))}
        for key in ("max_length", "options", "default", "allowed_file_types", "allowed_file_extensions"):
            if spec.get(key) not in (None, "", []):
                var[key] = spec[key]
        out.append(var)
    return out


def dataset_ids(cfg: dict) -> list[str]:
    """Enabled dataset ids of `dataset_configs.datasets.datasets` (older exports: `agent_mode.tools` dataset entries)."""
    holder = ((cfg.get("dataset_configs") or {}).get("datasets") or {}).get("datasets") or []
    ids = [str(d["dataset"]["id"]) for d in holder if isinstance(d, dict) and isinstance(d.get("dataset"), dict)
           and d["dataset"].get("id") and d["dataset"].get("enabled", True)]
    for tool in (cfg.get("agent_mode") or {}).get("tools") or []:
        if isinstance(tool, dict) and isinstance(tool.get("dataset"), dict) and tool["dataset"].get("id"):
            ids.append(str(tool["dataset"]["id"]))
    return list(dict.fromkeys(ids))


def _retrieval(cfg: dict, datasets: list[str], mode: str) -> dict:
    dc = cfg.get("dataset_configs") or {}
    query_var = cfg.get("dataset_query_variable") or ""
    selector = ["start", query_var] if mode == "completion" and query_var else ["sys", "query"]
    multiple = {"top_k": dc.get("top_k") or 4, "score_threshold": dc.get("score_threshold"),
                "score_threshold_enabled": bool(dc.get("score_threshold_enabled")),
                "reranking_enable": bool(dc.get("reranking_enable"))}
    return {"dataset_ids": datasets, "query_variable_selector": selector,
            "retrieval_mode": dc.get("retrieval_model") if dc.get("retrieval_model") in ("single", "multiple")
            else "multiple", "multiple_retrieval_config": multiple}


def convert_prompt(text: str, names: set[str]) -> str:
    """Dify's simple-prompt syntax -> graph references."""
    text = (text or "").replace("{{#query#}}", "{{#sys.query#}}").replace("{{#histories#}}", "#histories#")
    return _SIMPLE_VAR.sub(lambda m: f"{{{{#start.{m.group(1)}#}}}}" if m.group(1) in names else m.group(0), text)


def _with_context(text: str, has_context: bool) -> str:
    if has_context and "{{#context#}}" not in text:
        return _CONTEXT_BLOCK + text
    return text


def _llm(cfg: dict, model: dict, names: set[str], memory, has_context: bool, mode: str) -> dict:
    model = {"provider": model.get("provider"), "name": model["name"], "mode": model.get("mode") or "chat",
             "completion_params": model.get("completion_params") or {}}
    advanced = cfg.get("prompt_type") == "advanced"
    if model["mode"] == "completion":
        text = ((cfg.get("completion_prompt_config") or {}).get("prompt") or {}).get("text") if advanced else None
        text = _with_context(convert_prompt(text if text is not None else cfg.get("pre_prompt") or "", names),
                             has_context)
        if mode != "completion" and "#sys.query#" not in text:
            text += "\n\n#histories#\nHuman: {{#sys.query#}}\nAssistant: "
        template: list | dict = {"text": text}
    elif advanced and (cfg.get("chat_prompt_config") or {}).get("prompt"):
        template = [{"role": m.get("role", "user"), "text": convert_prompt(m.get("text") or "", names)}
                    for m in cfg["chat_prompt_config"]["prompt"] if isinstance(m, dict)]
        if has_context and not any("{{#context#}}" in m["text"] for m in template):
            template.insert(0, {"role": "system", "text": _with_context("", True).strip()})
    else:
        system = _with_context(convert_prompt(cfg.get("pre_prompt") or "", names), has_context).strip()
        if mode == "completion":  # the whole prompt is one user message
            template = [{"role": "user", "text": system}]
        else:
            template = [{"role": "system", "text": system}] if system else []
    data = {"model": model, "prompt_template": template, "vision": {"enabled": False},
            "context": {"enabled": has_context, "variable_selector": ["knowledge", "result"] if has_context else []}}
    if memory is not None:
        data["memory"] = dict(memory)
    return data


def _agent(cfg: dict, model: dict, names: set[str], memory, has_context: bool) -> dict:
    agent_mode = cfg.get("agent_mode") or {}
    strategy = str(agent_mode.get("strategy") or "").lower()
    instruction = convert_prompt(cfg.get("pre_prompt") or "", names)
    if has_context:
        instruction = instruction.replace("{{#context#}}", "{{#knowledge.result#}}")
        if "{{#knowledge.result#}}" not in instruction:
            instruction = f"Use this knowledge when it helps:\n{{{{#knowledge.result#}}}}\n\n{instruction}"
    tools = [_agent_tool(t) for t in agent_mode.get("tools") or []
             if isinstance(t, dict) and t.get("tool_name") and t.get("enabled", True) and not t.get("isDeleted")]
    selector = {"provider": model.get("provider"), "model": model["name"], "mode": model.get("mode") or "chat",
                "completion_params": model.get("completion_params") or {}, "model_type": "llm",
                "type": "model-selector"}
    return {"agent_strategy_provider_name": "langgenius/agent/agent",
            "agent_strategy_name": STRATEGIES.get(strategy, strategy),
            "agent_parameters": {"model": {"type": "constant", "value": selector},
                                 "tools": {"type": "constant", "value": tools},
                                 "instruction": {"type": "constant", "value": instruction},
                                 "query": {"type": "constant", "value": "{{#sys.query#}}"},
                                 "maximum_iterations": {"type": "constant",
                                                        "value": int(agent_mode.get("max_iteration") or 5)}},
            "memory": memory}


def _agent_tool(tool: dict) -> dict:
    """An agent_mode tool entry -> the agent node's tool entry (fixed parameters become settings)."""
    settings = {k: {"value": v} for k, v in (tool.get("tool_parameters") or {}).items() if v not in (None, "")}
    return {"enabled": True, "provider_name": tool.get("provider_id") or tool.get("provider_name"),
            "tool_name": tool["tool_name"], "type": tool.get("provider_type") or "builtin",
            "settings": settings, "parameters": {}}
