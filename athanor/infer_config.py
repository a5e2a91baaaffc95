"""The YAML forms of `athanor chat CONFIG` and `athanor export CONFIG`, with LLaMA-Factory's key names.

For: `load_chat_config` / `load_export_config` -> checked settings, and `chat_from_config` / `export_from_config`,
which do the work through our engine (chat_cli.py) and export.py. Keys: model_name_or_path, adapter_name_or_path
(default: the output_dir of a training YAML when it holds an adapter or a model), template; for export also
export_dir, export_size (shard size in GB), export_legacy_format (false only: we write safetensors), and ours:
export_format (hf | gguf), gguf_type, export_dtype (fp32 | fp16 | bf16) and name (register in the store).
A training YAML works as a chat config as is: its training keys are accepted and ignored. Unknown keys get a
"did you mean"; every problem is listed in one error, like the training config.

Not for: training (config.py, run.py) or argument parsing (cli_ext.py).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from athanor.errors import AthanorError
from athanor.train.config import FIELD_NAMES as TRAIN_KEYS
from athanor.train.config import ConfigError, _parse_overrides, read_config_mapping
from athanor.train.lf_keys import LF_KEYS


class ChatConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_name_or_path: str
    adapter_name_or_path: str | None = None
    template: str | None = None
    output_dir: str | None = None  # from a training YAML: where its adapter / model is
    finetuning_type: Literal["lora", "full", "freeze", "oft"] = "lora"
    system: str | None = None


class ExportConfig(ChatConfig):
    export_dir: str
    export_size: float | None = None  # GB per shard (LLaMA-Factory: 5); None = one file
    export_legacy_format: bool = False
    export_format: Literal["hf", "gguf"] = "hf"
    gguf_type: Literal["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q4_K_M", "Q5_K_M", "Q6_K", "IQ4_NL",
                       "IQ4_XS"] = "F16"
    export_dtype: Literal["fp32", "fp16", "bf16"] = "fp32"
    name: str | None = None
    # LF writes a GPTQ-quantized HF model; the nearest thing here is a GGUF of that many bits per weight
    export_quantization_bit: Literal[4, 8] | None = None
    export_quantization_dataset: str | None = None  # LF's GPTQ calibration data; round-to-nearest GGUF needs none


QUANT_BITS_TO_GGUF = {8: "Q8_0", 4: "Q4_1"}  # Q4_1 keeps a per-block minimum, like GPTQ's zero point
_IGNORED = set(TRAIN_KEYS) | (set(LF_KEYS) - set(ExportConfig.model_fields)) | {"infer_backend", "export_device", "trust_remote_code", "export_quantization_nsamples",
                              "export_quantization_maxlen",
                              "infer_dtype", "max_new_tokens", "temperature", "top_p", "top_k", "do_sample"}


def _load(cls: type[ChatConfig], path: str | Path, overrides: list[str] | None) -> ChatConfig:
    path = Path(path)
    raw = read_config_mapping(path)
    problems: list[str] = []
    raw.update(_parse_overrides(overrides or [], problems))
    known = {k: v for k, v in raw.items() if k in cls.model_fields}
    for key in raw:
        if key not in cls.model_fields and key not in _IGNORED:
            close = difflib.get_close_matches(str(key), list(cls.model_fields), n=1, cutoff=0.6)
            problems.append(f"unknown key {key!r}" + (f"; did you mean {close[0]!r}?" if close else ""))
    cfg = None
    try:
        cfg = cls.model_validate(known)
    except ValidationError as e:
        for err in e.errors():
            key = ".".join(str(p) for p in err["loc"]) or "config"
            got = f" (got {err['input']!r})" if err["type"] != "missing" else ""
            problems.append(f"{key}: {err['msg']}{got}")
    if cls is ExportConfig and raw.get("export_quantization_bit") not in (None, 4, 8):
        problems[:] = [p for p in problems if not p.startswith("export_quantization_bit")]
        problems.append(f"export_quantization_bit: {raw['export_quantization_bit']!r} is not supported; athanor "
                        "writes 4-bit (GGUF Q4_1) or 8-bit (GGUF Q8_0) exports")
    if cls is ExportConfig and raw.get("export_quantization_bit") and "gguf_type" in raw \
            and raw["gguf_type"] != QUANT_BITS_TO_GGUF.get(raw["export_quantization_bit"]):
        problems.append(f"export_quantization_bit: {raw['export_quantization_bit']} and gguf_type: {raw['gguf_type']} "
                        "disagree; set one of them")
    if cls is ExportConfig and raw.get("export_legacy_format") is True:
        problems.append("export_legacy_format: true (pytorch .bin) is not supported; athanor writes safetensors")
    if problems:
        raise ConfigError(str(path), problems)
    assert cfg is not None
    # relative paths in the YAML (adapters, outputs) are taken as they are: relative to where you run athanor,
    # the same directory `athanor train` wrote output_dir from
    return cfg


def load_chat_config(path: str | Path, overrides: list[str] | None = None) -> ChatConfig:
    return _load(ChatConfig, path, overrides)


def load_export_config(path: str | Path, overrides: list[str] | None = None) -> ExportConfig:
    cfg = _load(ExportConfig, path, overrides)
    assert isinstance(cfg, ExportConfig)
    return cfg


def model_and_adapter(cfg: ChatConfig) -> tuple[str, str | None]:
    """(base to load, LoRA adapter dir or None). A full/freeze training output is itself the model."""
    if cfg.adapter_name_or_path:
        return cfg.model_name_or_path, cfg.adapter_name_or_path
    out = Path(cfg.output_dir).expanduser() if cfg.output_dir else None
    if out is not None and (out / "adapter_config.json").is_file():
        return cfg.model_name_or_path, str(out)
    if out is not None and (out / "config.json").is_file() and cfg.finetuning_type != "lora":
        return str(out), None
    if out is not None and cfg.output_dir:
        raise AthanorError(f"output_dir {out} holds no trained adapter or model yet; run `athanor train` first, "
                           "or set adapter_name_or_path")
    return cfg.model_name_or_path, None


def load_llm(cfg: ChatConfig, engine_config: Any = None, options: dict | None = None) -> Any:
    """The base's store manifest (or a path) + the adapter merged at load + the template, loaded by the registry
    (the process's, or one made with `engine_config`): a runtime.handle.ModelHandle."""
    import hashlib

    from athanor.models.lora import check_adapter_dir
    from athanor.models.store import Store
    from athanor.runtime.handle import ModelHandle
    from athanor.runtime.registry import ModelRegistry, get_registry
    from athanor.train.export import template_source

    base, adapter = model_and_adapter(cfg)
    manifest = Store().resolve(base)
    if adapter is not None:
        manifest.adapters = [*manifest.adapters, str(check_adapter_dir(adapter))]
    if cfg.system is not None:
        manifest.system = cfg.system
    options = options or {}
    digest = hashlib.sha256(f"{manifest.model_dump_json()}{cfg.template}{options}".encode()).hexdigest()[:8]
    key = f"{manifest.name}+{Path(adapter).name if adapter else 'base'}@{digest}"  # one registry entry per setup
    manifest = manifest.model_copy(update={"name": key, "parameters": manifest.parameters | options})
    registry = ModelRegistry(engine_config=engine_config) if engine_config is not None else get_registry()
    llm = ModelHandle.open(key, registry, num_ctx=options.get("num_ctx"), manifest=manifest)
    if cfg.template is not None:  # chatml, a Jinja source or one of the model's named templates
        llm.tokenizer.chat_template = template_source(cfg.template, llm.tokenizer)
    return llm


def chat_from_config(path: str | Path, overrides: list[str] | None = None, verbose: bool = False,
                     prompt: str | None = None) -> None:
    """`athanor chat CONFIG`: the interactive terminal chat (or one answer) on base + adapter."""
    from athanor.chat_cli import interactive, one_shot

    llm = load_llm(load_chat_config(path, overrides))
    if prompt:
        one_shot(llm, prompt, verbose)
    else:
        interactive(llm, verbose)


def export_from_config(path: str | Path, overrides: list[str] | None = None,
                       echo: Callable[[str], None] = print) -> Path:
    """`athanor export CONFIG.yaml`: merge and write as the YAML says; returns the written path."""
    from athanor.train.export import export_model

    cfg = load_export_config(path, overrides)
    if cfg.export_quantization_bit is not None:
        cfg.export_format, cfg.gguf_type = "gguf", QUANT_BITS_TO_GGUF[cfg.export_quantization_bit]
        echo(f"export_quantization_bit: {cfg.export_quantization_bit} -> a GGUF file with {cfg.gguf_type} weights "
             "(round-to-nearest, no calibration data; GPTQ is not available here)")
    base, adapter = model_and_adapter(cfg)
    out = Path(cfg.export_dir).expanduser()
    if cfg.export_format == "gguf" and out.suffix.lower() != ".gguf":
        out = out / f"{cfg.name or Path(base).stem}-{cfg.gguf_type}.gguf"
    shard = int(cfg.export_size * 10**9) if cfg.export_size else None
    written = export_model(base, adapter, out, cfg.export_format, cfg.gguf_type, register_as=cfg.name,
                           dtype=cfg.export_dtype, max_shard_size=shard, template=cfg.template)
    echo(f"wrote {written}" + (f"; run it with: athanor run {cfg.name}" if cfg.name else ""))
    return written
