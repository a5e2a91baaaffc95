"""POST /api/create's errors, made safe to show a remote client: no temp paths, no file-existence oracle.

The store's own messages are right for the CLI user on their own machine ("no such file", "not a GGUF file",
"config.json missing" ...), but over HTTP they would tell a caller which server paths exist and what they are.
So when FROM or an ADAPTER is a path, every failure to use it gets one message that is the same for a missing
file, an unreadable one and a file of the wrong kind; relative paths (relative to a temp dir nobody chose) are
refused; the server's temp directory never appears. Modelfile syntax errors and store-name errors are shown as
they are (scrubbed of the temp path). Not for the store's logic (models/store.py).
"""

from __future__ import annotations

import contextlib
import os

from athanor.errors import AthanorError, ModelNotFoundError
from athanor.serve.errors import ServeError


def _path_args(text: str) -> list[str]:
    """FROM and ADAPTER values of a Modelfile text that name files (not store models)."""
    from athanor.models.modelfile import parse_modelfile_text
    from athanor.models.store import _looks_like_path

    mf = parse_modelfile_text(text)
    return [v for v in [mf.from_, *mf.adapters] if _looks_like_path(v)]


def _scrub(message: str, tmp: str) -> str:
    return message.replace(os.path.realpath(tmp), "<request>").replace(tmp, "<request>")


@contextlib.contextmanager
def create_errors(text: str, tmp: str):
    """Run the store's create inside this: its errors come out as ServeErrors a remote client may see."""
    try:
        paths = _path_args(text)
    except AthanorError as e:  # a Modelfile syntax error: the client's own text, shown as is
        raise ServeError(_scrub(str(e), tmp)) from None
    relative = [p for p in paths if not os.path.isabs(os.path.expanduser(p)) or p.startswith("~")]
    if relative:
        raise ServeError(f"FROM / ADAPTER paths must be absolute over HTTP, got {relative[0][:200]!r}")
    try:
        yield
    except ModelNotFoundError as e:
        raise ServeError(_scrub(str(e), tmp), 404, "model", "model_not_found") from None
    except (AthanorError, ValueError, OSError) as e:
        if paths:
            raise ServeError("FROM / ADAPTER: not a model this server can use (give a store model name, or an "
                             "absolute path to a readable .gguf file, Hugging Face model directory, LoRA "
                             "adapter directory or llama.cpp LoRA .gguf)") from None
        raise ServeError(_scrub(str(e), tmp)) from None
