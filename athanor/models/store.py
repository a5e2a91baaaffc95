"""The named-model store: Ollama-style names (`name[:tag]`) -> manifests (weights, template, parameters...).

User models live as one JSON manifest per name under `$ATHANOR_HOME/manifests/<name>/<tag>.json`
(ATHANOR_HOME defaults to ~/.athanor); built-in models (builtin.py) are listed without any user step.
`create` builds a manifest from a Modelfile whose FROM is a store name, a .gguf file or a Hugging Face
directory. Manifests point at weights where they are: nothing is copied.
Aliases (`$ATHANOR_HOME/aliases.json`, alias -> target name) are serving names that follow a target: `get` reads
the file on every call, so `athanor promote` moving "prod" to a new model takes effect on a running server's next
request. (`copy` is Ollama's `cp`: a new manifest, fixed at the time of the copy.)

Not for reading weights (loader.py) or merging adapters (lora.py); `show` only asks loader for metadata.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from athanor.errors import AthanorError, ModelNotFoundError
from athanor.home import athanor_home
from athanor.models.builtin import BUILTIN_ALIASES, MISSING_MESSAGE, builtin_manifests
from athanor.models.lora import check_adapter
from athanor.models.modelfile import Modelfile, ModelfileError, parse_modelfile, render_modelfile_text

DEFAULT_TAG = "latest"
ALIASES_FILE = "aliases.json"
MAX_NAME_BYTES = 255  # a name becomes a file name; longer ones are OSError ENAMETOOLONG on every file system
_PART = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_NAME = re.compile(rf"^{_PART}(:{_PART})?$")


class Manifest(BaseModel):
    """What a model name means. Written by `Store.create`/`copy`, read by the CLI, server and loader."""

    name: str = Field(description="full name with tag, e.g. 'mario:latest'")
    weights: str = Field(description="absolute path to a .gguf file or a Hugging Face model directory")
    format: Literal["gguf", "hf"] = Field(description="how `weights` is stored")
    template: str | None = Field(None, description="chat template override (Jinja, or an Ollama Go template); None -> the model's own")
    system: str | None = Field(None, description="default system prompt; None -> none added")
    parameters: dict[str, Any] = Field(default_factory=dict, description="Ollama PARAMETERs; stop is a list")
    adapters: list[str] = Field(default_factory=list, description="absolute paths of LoRA adapters (PEFT dirs or llama.cpp .gguf)")
    license: str | None = Field(None, description="license text or id; None -> the weights' own")
    messages: list[dict[str, str]] = Field(default_factory=list, description="role/content messages put first")
    created_at: str = Field("", description="UTC ISO-8601 time the manifest was written")
    parent: str | None = Field(None, description="the FROM it was built from (informational)")
    is_builtin: bool = Field(False, description="shipped with athanor: listed always, cannot be removed")
    lineage: dict[str, Any] = Field(default_factory=dict, description="where it came from: base, adapters, "
                                    "training config, datasets (ops/lineage.py reads it)")


def normalize_name(name: str) -> str:
    """'mario' -> 'mario:latest'; raises AthanorError for a malformed name (at most 255 bytes: a file name)."""
    if len((name or "").encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise AthanorError(f"invalid model name {name[:40]!r}...: longer than {MAX_NAME_BYTES} bytes")
    if not _NAME.fullmatch(name or ""):
        raise AthanorError(
            f"invalid model name {name[:100]!r}: use letters, digits, '.', '_' or '-', and an optional ':tag' "
            "(e.g. mario:v1)"
        )
    return name if ":" in name else f"{name}:{DEFAULT_TAG}"


def short_name(name: str) -> str:
    """'mario:latest' -> 'mario' (how names are shown and suggested)."""
    return name.removesuffix(f":{DEFAULT_TAG}")


class Store:
    """Named models under one home directory (default: athanor_home() at construction)."""

    def __init__(self, home: str | Path | None = None) -> None:
        self.home = Path(home).expanduser() if home is not None else athanor_home()
        self.manifest_dir = self.home / "manifests"

    # ---- reading

    def list(self) -> list[Manifest]:
        """Built-in and user models, sorted by name."""
        found = dict(builtin_manifests())
        for path in sorted(self.manifest_dir.glob("*/*.json")):
            m = self._read(path)
            found[m.name] = m
        return sorted(found.values(), key=lambda m: m.name)

    def served(self) -> list[tuple[str, Manifest]]:
        """Every name a client may ask for, with its manifest: the models, then each alias whose target still
        exists (an alias to a deleted model is not offered). What /v1/models and /api/tags list."""
        out = [(m.name, m) for m in self.list()]
        for alias, target in sorted(self.aliases().items()):
            try:
                out.append((alias, self._lookup(target)))
            except ModelNotFoundError:
                continue
        return out

    def get(self, name: str) -> Manifest:
        """The manifest for `name`, with its weights checked to exist; unknown -> ModelNotFoundError."""
        m = self._lookup(name)
        if m.is_builtin and not m.weights:
            raise AthanorError(MISSING_MESSAGE)
        if not Path(m.weights).exists():
            raise AthanorError(f"model {short_name(m.name)!r}: weights not found at {m.weights} (moved or deleted?)")
        return m

    def aliases(self) -> dict[str, str]:
        """alias -> target (full names)."""
        path = self.home / ALIASES_FILE
        if not path.is_file():
            return {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise AthanorError(f"corrupt alias file {path}; delete it and set the aliases again") from None
        return data if isinstance(data, dict) else {}

    def resolve(self, name_or_path: str) -> Manifest:
        """A store name, else a .gguf file or Hugging Face directory used directly (an unnamed manifest).

        Names win over same-named folders in the working directory; text that looks like a path is only a path.
        """
        path = Path(name_or_path).expanduser()
        if not _looks_like_path(name_or_path):
            try:
                return self.get(name_or_path)
            except ModelNotFoundError:
                if not path.exists():
                    raise
        if not path.exists():
            raise AthanorError(f"{name_or_path}: no such file or directory "
                               "(expected a store name, a .gguf file or a Hugging Face directory)")
        return Manifest(name=path.name, weights=str(path.resolve()), format="hf" if path.is_dir() else "gguf")

    def show(self, name: str) -> dict[str, Any]:
        """Manifest plus the weights' metadata, for `athanor show`."""
        from athanor.models.loader import inspect_weights  # lazy: reads GGUF/HF headers

        m = self.get(name)
        info = inspect_weights(m.weights)
        return {
            "name": m.name,
            "weights": m.weights,
            "format": m.format,
            "architecture": info.get("arch"),
            "num_parameters": info.get("num_parameters"),
            "quantization": info.get("quantization"),
            "context_length": info.get("context_length"),
            "embedding_length": info.get("embedding_length"),
            "template": m.template if m.template is not None else info.get("chat_template"),
            "system": m.system,
            "parameters": m.parameters,
            "license": m.license if m.license is not None else info.get("license"),
            "adapters": m.adapters,
            "messages": m.messages,
            "parent": m.parent,
            "created_at": m.created_at,
        }

    def render_modelfile(self, manifest: Manifest) -> str:
        """A Modelfile that `create` turns back into the same manifest (FROM is the absolute weights path)."""
        mf = Modelfile(
            from_=manifest.weights,
            parameters=manifest.parameters,
            template=manifest.template,
            system=manifest.system,
            adapters=list(manifest.adapters),
            license=manifest.license,
            messages=manifest.messages,
        )
        name = short_name(manifest.name)
        header = f"# Modelfile generated by `athanor show --modelfile {name}`\n"
        header += f"# To build on this model, replace FROM with: FROM {name}\n"
        return header + render_modelfile_text(mf)

    # ---- writing

    def create(self, name: str, modelfile_path: str | Path) -> Manifest:
        """Build `name` from a Modelfile and write its manifest (replacing any user model of that name)."""
        full = self._writable_name(name)
        mf = parse_modelfile(modelfile_path)
        base_dir = Path(modelfile_path).resolve().parent
        m = self._resolve_from(mf, base_dir)
        adapters = [_resolve_adapter(mf, i, base_dir) for i in range(len(mf.adapters))]
        lineage = _built_lineage(m, adapters)
        m = _apply_modelfile(m, mf, adapters)
        m = m.model_copy(update={"name": full, "created_at": _now(), "is_builtin": False, "lineage": lineage})
        self._write(m)
        return m

    def copy(self, src: str, dst: str) -> Manifest:
        """Copy model `src` to the new name `dst` (replacing any user model of that name)."""
        m = self._lookup(src)
        copied = m.model_copy(update={"name": self._writable_name(dst), "created_at": _now(), "is_builtin": False})
        if m.is_builtin:
            copied.parent = short_name(m.name)
        self._write(copied)
        return copied

    def set_alias(self, alias: str, target: str) -> str | None:
        """Point serving name `alias` at model `target` (an alias target is followed to its model); returns the
        previous target, or None. A real model's name cannot become an alias."""
        full = self._writable_name(alias)
        if self._path(full).is_file():
            raise AthanorError(f"{short_name(full)!r} is a model, not an alias; choose another alias name")
        dest = self._lookup(target).name
        if dest == full:
            raise AthanorError(f"alias {short_name(full)!r} cannot point at itself")
        aliases = self.aliases()
        previous = aliases.get(full)
        aliases[full] = dest
        self.home.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.home / ALIASES_FILE, json.dumps(aliases, indent=2, sort_keys=True) + "\n")
        return previous

    def update_lineage(self, name: str, lineage: dict[str, Any]) -> Manifest:
        """Merge `lineage` keys into a user model's manifest (built-in models have none to write)."""
        m = self._lookup(name)
        if m.is_builtin:
            raise AthanorError(f"{short_name(m.name)!r} is a built-in model; its lineage cannot be written")
        m = m.model_copy(update={"lineage": {**m.lineage, **lineage}}, deep=True)
        self._write(m)
        return m

    def remove(self, name: str) -> None:
        """Delete a user model's manifest (never its weights), or an alias."""
        full = normalize_name(name)
        aliases = self.aliases()
        if full in aliases and not self._path(full).is_file():
            del aliases[full]
            _atomic_write(self.home / ALIASES_FILE, json.dumps(aliases, indent=2, sort_keys=True) + "\n")
            return
        if self._builtin(full) is not None:
            raise AthanorError(f"{short_name(full)!r} is a built-in model and cannot be removed")
        path = self._path(full)
        if not path.is_file():
            raise self._not_found(name)
        path.unlink()
        if not any(path.parent.iterdir()):
            path.parent.rmdir()

    # ---- helpers

    def _lookup(self, name: str, hops: int = 0) -> Manifest:
        full = normalize_name(name)
        builtin = self._builtin(full)
        if builtin is not None:
            return builtin
        path = self._path(full)
        if not path.is_file():
            target = self.aliases().get(full)
            if target is not None and hops < 8:  # set_alias stores final targets; a loop ends here
                return self._lookup(target, hops + 1)
            raise self._not_found(name)
        return self._read(path)

    @staticmethod
    def _builtin(full: str) -> Manifest | None:
        return builtin_manifests().get(BUILTIN_ALIASES.get(full, full))

    def _writable_name(self, name: str) -> str:
        full = normalize_name(name)
        if self._builtin(full) is not None:
            raise AthanorError(f"{short_name(full)!r} is a built-in model name; choose another name or tag")
        return full

    def _path(self, full: str) -> Path:
        model, tag = full.split(":")
        return self.manifest_dir / model / f"{tag}.json"

    def _read(self, path: Path) -> Manifest:
        try:
            return Manifest.model_validate_json(path.read_text(encoding="utf-8"))
        except (ValidationError, UnicodeDecodeError) as e:
            first = str(e).splitlines()[0]
            raise AthanorError(f"corrupt manifest {path} ({first}); delete the file or re-create the model") from None

    def _write(self, m: Manifest) -> None:
        path = self._path(m.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, m.model_dump_json(indent=2) + "\n")

    def _not_found(self, name: str) -> ModelNotFoundError:
        close = self._close_names(name)
        hint = f" (did you mean {', '.join(close)}?)" if close else " (see `athanor list`)"
        return ModelNotFoundError(
            f"model {name!r} not found{hint}; create it with: athanor create {short_name(name)} -f Modelfile"
        )

    def _close_names(self, name: str) -> list[str]:
        known = [short_name(m.name) for m in self.list()] + [short_name(a) for a in BUILTIN_ALIASES]
        return difflib.get_close_matches(short_name(name), known, n=3, cutoff=0.6)

    def _resolve_from(self, mf: Modelfile, base_dir: Path) -> Manifest:
        """The manifest that FROM names: a store model (inherited as is) or bare weights (a .gguf or HF dir)."""
        is_name = not _looks_like_path(mf.from_) and _NAME.match(mf.from_) is not None
        if is_name:
            try:
                m = self.get(mf.from_)
                return m.model_copy(update={"parent": short_name(m.name)}, deep=True)
            except ModelNotFoundError:
                pass  # maybe a file or directory next to the Modelfile
            except AthanorError as e:
                raise ModelfileError(mf.path, mf.from_line, "FROM", str(e)) from None
        path = (base_dir / Path(mf.from_).expanduser()).resolve()
        if path.exists():
            return Manifest(name="", weights=str(path), format=_weights_format(path, mf), parent=mf.from_)
        close = self._close_names(mf.from_) if is_name else []
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ModelfileError(
            mf.path,
            mf.from_line,
            "FROM",
            f"{mf.from_!r} is not a store model, a .gguf file or a Hugging Face directory{hint}; no such path {path}",
        )


def _looks_like_path(text: str) -> bool:
    return any(c in text for c in "/\\") or text.startswith((".", "~")) or text.endswith(".gguf")


def _weights_format(path: Path, mf: Modelfile) -> str:
    if path.is_dir():
        if (path / "config.json").is_file():
            return "hf"
        raise ModelfileError(
            mf.path, mf.from_line, "FROM", f"{path} is a directory without config.json, not a Hugging Face model"
        )
    with open(path, "rb") as f:
        if f.read(4) == b"GGUF":
            return "gguf"
    raise ModelfileError(mf.path, mf.from_line, "FROM", f"{path} is not a GGUF file (no GGUF magic bytes)")


def _resolve_adapter(mf: Modelfile, i: int, base_dir: Path) -> str:
    try:
        return str(check_adapter(base_dir / Path(mf.adapters[i]).expanduser()))
    except AthanorError as e:
        raise ModelfileError(mf.path, mf.adapter_lines[i], "ADAPTER", str(e)) from None


def _apply_modelfile(base: Manifest, mf: Modelfile, adapters: list[str]) -> Manifest:
    """Modelfile instructions override what FROM gave: per PARAMETER key, TEMPLATE, SYSTEM, LICENSE; ADAPTERs
    are added after inherited ones; MESSAGEs, when given, replace inherited ones."""
    return base.model_copy(
        update={
            "parameters": {**base.parameters, **mf.parameters},
            "template": mf.template if mf.template is not None else base.template,
            "system": mf.system if mf.system is not None else base.system,
            "license": mf.license if mf.license is not None else base.license,
            "adapters": base.adapters + [a for a in adapters if a not in base.adapters],
            "messages": mf.messages or base.messages,
        },
        deep=True,
    )


LINEAGE_FILE = "lineage.json"


def lineage_sidecar(path: str | Path) -> Path:
    """Where training/export wrote the lineage of a model dir, adapter dir (lineage.json) or file (<file>.lineage.json)."""
    path = Path(path)
    return path / LINEAGE_FILE if path.is_dir() else path.with_name(path.name + ".lineage.json")


def read_lineage(path: str | Path) -> dict | None:
    """The sidecar's record; None when there is none or it is damaged (no lineage, never a failed load)."""
    file = lineage_sidecar(path)
    try:
        data = json.loads(file.read_text(encoding="utf-8")) if file.is_file() else None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _built_lineage(base: Manifest, adapters: list[str]) -> dict[str, Any]:
    """A new manifest's lineage: the store model it was built FROM (with that model's lineage), what made its
    weights (their sidecar), and what made each added adapter."""
    out: dict[str, Any] = {}
    if base.name:  # FROM a store model
        out["from"] = {"name": base.name, "lineage": base.lineage} if base.lineage else {"name": base.name}
    elif (made := read_lineage(base.weights)) is not None:
        out["weights"] = made
    if adapters:
        out["adapters"] = [{"path": a, "lineage": read_lineage(a)} for a in adapters]
    return out


def _atomic_write(path: Path, text: str) -> None:
    """Write via a temp file in the same directory + os.replace, so readers never see half a manifest."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
