"""`Services`: what a workflow run may reach outside its graph — chat models, knowledge bases, tools, limits.

The engine builds one `Services` per run (the CLI and the HTTP routes from their options) and hands it to every
node through `RunContext.services`. Model names in a Dify DSL (`node.data.model = {provider, name, ...}`) are
resolved here: first through the model map (a small YAML/JSON file, Dify "provider/name" or "name" -> one of our
model specs, see `athanor.llm.base`), else to the default model. Loaded models are cached per spec, so twenty
llm nodes on "smollm2" load it once.

Model-map file, either flat or with a default::

    langgenius/openai/openai/gpt-4o: smollm2      # full provider path as newer Dify exports it
    openai/gpt-4o-mini: openai:http://127.0.0.1:8000/v1#qwen
    gpt-4: smollm2                                 # a bare model name matches any provider
    # or:  {default: smollm2, models: {gpt-4: smollm2}}

Not for: graph semantics (engine.py), prompt building (prompting.py), or loading models (llm/).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from athanor.errors import AthanorError

if TYPE_CHECKING:
    from athanor.agent.tools import Tool
    from athanor.llm.base import ChatModel
    from athanor.rag.kb import KnowledgeBase


def model_keys(model: dict) -> list[str]:
    """The map keys a DSL model mapping may match, most specific first.

    Dify writes the provider as "openai" in older exports and "langgenius/openai/openai" in newer ones;
    both "langgenius/openai/openai/gpt-4o", "openai/gpt-4o" and "gpt-4o" are tried.
    """
    name = str(model.get("name") or "").strip()
    return provider_keys(name, model.get("provider")) if name else []


def provider_keys(name: str, provider: str | None = None) -> list[str]:
    """Lookup keys for a Dify model or tool, most specific first: full provider/name, short provider/name, name."""
    provider = str(provider or "").strip("/")
    keys = []
    if provider:
        keys.append(f"{provider}/{name}")
        short = provider.rsplit("/", 1)[-1]
        if short != provider:
            keys.append(f"{short}/{name}")
    return [*keys, name]


@dataclass
class Services:
    default_model: str | None = None  # a model spec for load_chat_model ("smollm2", "openai:URL#m")
    model_map: dict[str, str] = field(default_factory=dict)  # Dify "provider/name" or "name" -> model spec
    tools: dict[str, Tool] = field(default_factory=dict)  # extra tools by name (built-ins resolved by nodes/model.py)
    http_allow_hosts: set[str] = field(default_factory=lambda: {"127.0.0.1", "localhost"})
    code_timeout_s: float = 10.0  # per code-node / python-tool run
    code_memory_mb: int = 512
    unsafe_code: bool = False  # run code nodes / the python tool UNCONFINED (no OS sandbox), warning on each run
    allow_local_files: bool = True  # files may name server paths (CLI); False over HTTP: uploads and URLs only
    file_url_hosts: set[str] = field(default_factory=set)  # hosts a file's remote_url may be fetched from
    max_steps: int = 500  # node executions per run
    max_seconds: float = 1200.0  # wall time per run
    files_root: str | None = None  # root for the read_file / list_dir tools (None: the current directory)
    tool_bindings: dict[str, str] = field(default_factory=dict)  # Dify "provider/tool" or "tool" -> our tool name
    kb_bindings: dict[str, str] = field(default_factory=dict)  # Dify dataset id -> local knowledge-base name
    upload_root: str | None = None  # set (HTTP runs): document-extractor reads only files under this folder
    stop: threading.Event = field(default_factory=threading.Event)  # set: the run stops at its next check
    _models: dict = field(default_factory=dict, init=False, repr=False)
    _bases: dict = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    # --- models ------------------------------------------------------------------------------------------

    def resolve_model(self, model: dict) -> str | None:
        """The model spec a DSL model mapping runs on, or None when neither the map nor the default gives one."""
        for key in model_keys(model or {}):
            if key in self.model_map:
                return self.model_map[key]
        return self.default_model

    def model_problems(self, model: dict) -> list[str]:
        """Static problems of a node's model mapping (for `workflow validate`); empty when it will resolve."""
        if not isinstance(model, dict) or not model.get("name"):
            return ["no model configured (data.model.name is empty)"]
        if self.resolve_model(model) is None:
            label = "/".join(k for k in (model.get("provider"), model.get("name")) if k)
            return [(f"model {label!r} is not in the model map and no default model is set "
                     "(pass --model NAME or --model-map FILE)")]
        return []

    def chat_model(self, model: dict) -> ChatModel:
        """The DSL's node.data.model mapping -> a loaded ChatModel (cached per spec)."""
        from athanor.workflow.nodes.base import WorkflowNodeError

        problems = self.model_problems(model)
        if problems:
            raise WorkflowNodeError(problems[0])
        spec = self.resolve_model(model)
        if (loaded := self._models.get(spec)) is not None:
            return loaded
        with _LOAD_LOCK:  # parallel branches (and runs sharing a cache) asking for the same model load it once
            if spec not in self._models:
                self._models[spec] = _load(spec)
            return self._models[spec]

    def register_model(self, spec: str, model: ChatModel) -> None:
        """Use an already loaded model for `spec` (a server that holds its models, or a test's scripted model)."""
        with self._lock:
            self._models[spec] = model

    # --- knowledge bases ---------------------------------------------------------------------------------

    def knowledge_base(self, dataset_id: str) -> KnowledgeBase:
        """A knowledge base by name (Dify's dataset ids are our kb names, or bound to one); opened once per run."""
        from athanor.rag.kb import KnowledgeBase
        from athanor.workflow.nodes.base import WorkflowNodeError

        dataset_id = self.kb_bindings.get(dataset_id, dataset_id)
        with self._lock:
            if dataset_id not in self._bases:
                try:
                    self._bases[dataset_id] = KnowledgeBase.open(dataset_id)
                except ValueError as e:
                    raise WorkflowNodeError(f"knowledge retrieval: {e}") from None
            return self._bases[dataset_id]

    def close(self) -> None:
        """Close the knowledge bases this run opened (models stay loaded: they are the caller's to drop)."""
        with self._lock:
            for kb in self._bases.values():
                kb.close()
            self._bases.clear()

    # --- construction ------------------------------------------------------------------------------------

    @classmethod
    def from_options(cls, model: str | None = None, model_map_file: str | None = None,
                     model_cache: dict | None = None, bindings_file: str | None = None,
                     bind_tools: list[str] | None = None, bind_kbs: list[str] | None = None) -> Services:
        """Services from CLI/HTTP options: a default model spec and/or a model-map file (YAML or JSON), and
        tool / knowledge-base bindings (a bindings file, then KEY=VALUE pairs that override it).

        model_cache: {spec: ChatModel} shared with other Services (a server's runs load each model once)."""
        from athanor.workflow.bindings import parse_pairs, read_bindings

        default, mapping = None, {}
        if model_map_file:
            default, mapping = read_model_map(model_map_file)
        tools, kbs = read_bindings(bindings_file) if bindings_file else ({}, {})
        tools |= parse_pairs(bind_tools, "--bind-tool")
        kbs |= parse_pairs(bind_kbs, "--bind-kb")
        services = cls(default_model=(model or default or None), model_map=mapping, tool_bindings=tools,
                       kb_bindings=kbs)
        if model_cache is not None:
            services._models = model_cache
        return services


def read_model_map(path: str | Path) -> tuple[str | None, dict[str, str]]:
    """A model-map file -> (default spec or None, {dify key: spec}); a clear AthanorError when malformed."""
    p = Path(path)
    if not p.is_file():
        raise AthanorError(f"model map {str(p)!r} not found")
    import yaml

    text = p.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if p.suffix.lower() == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as e:  # the user's file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise AthanorError(f"model map {str(p)!r} does not parse: {first}") from None
    if data is None:
        return None, {}
    if not isinstance(data, dict):
        raise AthanorError(f"model map {str(p)!r}: expected a mapping of Dify model name -> model spec")
    default = None
    if isinstance(data.get("models"), dict) or "default" in data:
        default = data.get("default")
        data = data.get("models") or {}
    bad = [str(k) for k, v in data.items() if not isinstance(v, str) or not v.strip()]
    if bad or (default is not None and not isinstance(default, str)):
        raise AthanorError(f"model map {str(p)!r}: every value must be a model spec string "
                           f"(bad: {', '.join(bad) or 'default'})")
    return default, {str(k).strip(): v.strip() for k, v in data.items()}


_LOAD_LOCK = threading.Lock()  # one model load at a time, process-wide (model caches may be shared)


def _load(spec: str) -> ChatModel:
    from athanor.llm.base import load_chat_model
    from athanor.workflow.nodes.base import WorkflowNodeError

    try:
        return load_chat_model(spec)
    except (AthanorError, ValueError, OSError) as e:
        raise WorkflowNodeError(f"cannot load model {spec!r}: {e}") from None
