"""LLaMA Pro block expansion, as LLaMA-Factory's scripts/llama_pro.py and `use_llama_pro: true` do it.

For: `expand_blocks(model, num_expand)`, which splits the decoder into `num_expand` equal groups and puts after
each group a copy of its last block whose output projections (attention `o_proj`, MLP `down_proj`) are zero, so
the copy adds nothing to the residual stream and the expanded model computes exactly what the original did;
`expand_model_dir` (the `athanor llama-pro` command: load, expand, save a Hugging Face folder with the tokenizer);
and the training side: with `use_llama_pro`, freeze tuning trains only the expanded blocks (every
num_layers / freeze_trainable_layers-th block, LF's stride) and LoRA targets only their modules.

Not for: architectures whose blocks lack o_proj/down_proj (refused: zeroing them is what keeps the output equal).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from athanor.errors import AthanorError

ZEROED = ("o_proj", "down_proj")  # the projections whose zero makes a copied block an identity


EXPANDED_KEY = "llama_pro_num_expand"  # config.json: how many blocks `athanor llama-pro` added


def check_expansion(model: Any, num_expanded: int) -> None:
    """A model made by `athanor llama-pro` records its expansion; a freeze_trainable_layers that differs would pick
    original blocks to train (LF's stride rule does not know), so it is refused in one line."""
    made = getattr(model.config, EXPANDED_KEY, None)
    if made is not None and made != num_expanded:
        raise AthanorError(f"freeze_trainable_layers: {num_expanded}, but this model was expanded by {made} blocks "
                           f"(athanor llama-pro); set freeze_trainable_layers: {made} so the new blocks train")


def expanded_layer_ids(num_layers: int, num_expanded: int) -> list[int]:
    """Indices of the expanded blocks in a model of `num_layers` blocks, `num_expanded` of them new (LF's stride)."""
    if num_expanded < 1 or num_layers % num_expanded:
        raise AthanorError(f"use_llama_pro: the model's {num_layers} layers are not divisible by "
                           f"freeze_trainable_layers={num_expanded} (the number of expanded blocks); expand the "
                           f"model first: athanor llama-pro MODEL --out DIR --num-expand {num_expanded}")
    stride = num_layers // num_expanded
    return list(range(stride - 1, num_layers, stride))


def _decoder_layers(model: Any) -> torch.nn.ModuleList:
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise AthanorError(f"LLaMA Pro: {type(model).__name__} has no model.layers decoder blocks")
    return layers


def expand_blocks(model: Any, num_expand: int) -> Any:
    """Insert `num_expand` zero-output copies of blocks, in place (LF's layout); returns the model."""
    layers = _decoder_layers(model)
    n = len(layers)
    if num_expand < 1 or n % num_expand:
        raise AthanorError(f"num_expand: the model's {n} layers must be divisible by num_expand={num_expand}")
    split = n // num_expand
    new: list[torch.nn.Module] = []
    for i, layer in enumerate(layers):
        new.append(layer)
        if (i + 1) % split == 0:
            new.append(_zero_output_copy(layer))
    for idx, layer in enumerate(new):
        _set_layer_index(layer, idx)
    model.model.layers = torch.nn.ModuleList(new)
    config = model.config
    if isinstance(getattr(config, "layer_types", None), list):  # per-layer attention kinds follow their source
        types: list[str] = []
        for i, kind in enumerate(config.layer_types):
            types += [kind, kind] if (i + 1) % split == 0 else [kind]
        config.layer_types = types
    config.num_hidden_layers = len(new)
    return model


def _zero_output_copy(layer: torch.nn.Module) -> torch.nn.Module:
    copied = copy.deepcopy(layer)
    zeroed = 0
    for name, module in copied.named_modules():
        if name.rsplit(".", 1)[-1] in ZEROED and isinstance(module, torch.nn.Linear):
            torch.nn.init.zeros_(module.weight)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
            zeroed += 1
    if zeroed != len(ZEROED):
        raise AthanorError(f"LLaMA Pro: a {type(layer).__name__} block has no {' and '.join(ZEROED)} projections to "
                           "zero; only LLaMA-style blocks can be expanded")
    return copied


def _set_layer_index(layer: torch.nn.Module, idx: int) -> None:
    for module in (layer, getattr(layer, "self_attn", None)):
        if module is not None and hasattr(module, "layer_idx"):
            module.layer_idx = idx


# ------------------------------------------------------------------------------------------------ training


def train_only_expanded_blocks(model: Any, num_expanded: int) -> list[int]:
    """Freeze everything but the expanded blocks; returns their indices."""
    check_expansion(model, num_expanded)
    layers = _decoder_layers(model)
    ids = expanded_layer_ids(len(layers), num_expanded)
    for p in model.parameters():
        p.requires_grad_(False)
    for i in ids:
        for p in layers[i].parameters():
            p.requires_grad_(True)
    return ids


def expanded_lora_targets(model: Any, lora_target: str | list[str], num_expanded: int) -> list[str]:
    """Full names of the linear modules of the expanded blocks that `lora_target` ('all' or names) picks."""
    check_expansion(model, num_expanded)
    ids = expanded_layer_ids(len(_decoder_layers(model)), num_expanded)
    marks = tuple(f".layers.{i}." for i in ids)
    names = [name for name, module in model.named_modules()
             if isinstance(module, torch.nn.Linear) and any(m in name for m in marks)
             and (lora_target == "all" or name.rsplit(".", 1)[-1] in lora_target)]
    if not names:
        raise AthanorError(f"lora_target: {lora_target} names no linear module of the expanded blocks {ids}")
    return names


# ------------------------------------------------------------------------------------------------ command


def expand_model_dir(model_ref: str, out: Path, num_expand: int, echo: Callable[[str], None] = print) -> Path:
    """`athanor llama-pro`: the model (store name, HF folder or GGUF) with `num_expand` blocks added, saved to
    `out` as a Hugging Face folder (safetensors, config, tokenizer) that `model_name_or_path` can name."""
    import transformers

    from athanor.models.loader import load_checkpoint
    from athanor.train.sft import _model_from_gguf, resolve_base, save_tokenizer_files

    base = resolve_base(model_ref)
    if base.is_dir():
        model = transformers.AutoModelForCausalLM.from_pretrained(base, dtype="auto")
        tokenizer = None
    else:
        gguf = load_checkpoint(base)
        model, tokenizer = _model_from_gguf(base, gguf), gguf.tokenizer
    before = len(_decoder_layers(model))
    expand_blocks(model, num_expand)
    setattr(model.config, EXPANDED_KEY, num_expand)
    echo(f"expanded {before} layers to {before + num_expand}: a zero-output copy after every {before // num_expand}")
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    if tokenizer is None:
        from athanor.text.tokenizer import Tokenizer

        tokenizer = Tokenizer.from_hf_dir(base)
    save_tokenizer_files(base, tokenizer, out)
    echo(f"saved to {out}; fine-tune it with: model_name_or_path: {out}, finetuning_type: freeze, "
         f"freeze_trainable_layers: {num_expand}, use_llama_pro: true")
    return out
