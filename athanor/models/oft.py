"""Merge a PEFT OFT adapter (orthogonal fine-tuning, `finetuning_type: oft`) into Hugging Face-named weights.

An OFT adapter rotates each targeted linear layer's input by a block-diagonal orthogonal matrix R (peft's
`OFTRotationModule`): y = W (R x-rotation) x, so the merged weight is W' = W @ R^T. Each block is the Cayley
transform of a skew-symmetric matrix Q whose upper triangle is stored, row by row, in
`<module>.oft_R.weight` (r blocks x b(b-1)/2 numbers; one block for every position with `block_share`):
R = (I - Q)(I + Q)^-1 with `use_cayley_neumann: false`, or by default the truncated Neumann series peft uses,
I + 2Q + 2Q^2 + ... + 2Q^k + Q^(k+1) with k = max(2, n - 2), n = `num_cayley_neumann_terms`. (That series tends
to (I + Q)(I - Q)^-1, the transpose of the exact one: peft's two settings turn the same stored Q opposite ways.
Both are reproduced term for term, so the merged model equals base + adapter either way.)

For: `merge_oft(tensors, adapter_dir)`, which lora.merge_adapters calls for peft_type OFT (`athanor export`, a
Modelfile ADAPTER, chat). Not for: training (train/sft.py uses peft), constrained OFT (`coft`, refused: peft
re-projects its weights on every forward), OFT on embeddings or convolutions (refused). Never imports peft.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

from athanor.errors import AthanorError

if TYPE_CHECKING:
    import torch

_PREFIX = "base_model.model."
# `<module>.oft_R.weight`; with an adapter name: `<module>.oft_R.<name>.weight`
_OFT_KEY = re.compile(r"^(?P<module>.+)\.oft_R(?:\.[\w-]+)?\.weight$")


def merge_oft(tensors: dict[str, torch.Tensor], adapter_dir: str | Path) -> dict[str, torch.Tensor]:
    """Return a new dict with every OFT rotation folded into its linear weight (and modules_to_save tensors put in);
    the inputs are not modified; merged tensors keep their dtype (the product is done in float32)."""
    from athanor.models.lora import WEIGHTS_FILE, _check_shape, _load_adapter_tensors, check_adapter_dir

    path = check_adapter_dir(adapter_dir)
    cfg = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
    for flag in ("coft", "fan_in_fan_out"):
        if cfg.get(flag):
            raise AthanorError(f"OFT adapter {adapter_dir}: {flag}=true is not supported; merge it with peft first")
    neumann = bool(cfg.get("use_cayley_neumann", True))
    terms = int(cfg.get("num_cayley_neumann_terms", 5))
    out = dict(tensors)
    for key, value in _load_adapter_tensors(adapter_dir).items():
        name = key.removeprefix(_PREFIX)
        m = _OFT_KEY.match(name)
        if m is None:  # modules_to_save or a trained bias: replaces the base tensor
            if name not in tensors:
                raise AthanorError(f"OFT adapter {adapter_dir}: tensor {name!r} matches no weight of the base model")
            _check_shape(adapter_dir, name, tuple(value.shape), tuple(tensors[name].shape))
            out[name] = value.to(tensors[name].dtype)
            continue
        weight_name = f"{m['module']}.weight"
        if weight_name not in tensors or tensors[weight_name].dim() != 2:
            raise AthanorError(f"OFT adapter {adapter_dir}: {m['module']} matches no linear weight of the base model "
                               f"(in {WEIGHTS_FILE})")
        base = tensors[weight_name]
        rotation = block_rotation(value.float(), base.shape[1], neumann, terms, f"OFT adapter {adapter_dir}: {name}")
        out[weight_name] = (base.float() @ rotation.T).to(base.dtype)
    return out


def block_rotation(packed: torch.Tensor, in_features: int, neumann: bool = True, terms: int = 5,
                   where: str = "OFT") -> torch.Tensor:
    """The (in, in) block-diagonal rotation from peft's packed `oft_R.weight` (blocks x b(b-1)/2)."""
    import torch

    blocks, n = packed.shape
    size = _block_size(n, where)
    if in_features % size or (blocks != 1 and blocks * size != in_features):
        raise AthanorError(f"{where}: {blocks} blocks of {size} do not fit a layer with {in_features} inputs")
    rows, cols = torch.triu_indices(size, size, 1)
    q = torch.zeros(blocks, size, size, dtype=packed.dtype)
    q[:, rows, cols] = packed
    q = q - q.transpose(1, 2)
    eye = torch.eye(size, dtype=packed.dtype).expand(blocks, size, size)
    r = _neumann(q, eye, terms) if neumann else torch.linalg.solve(eye + q, eye - q, left=False)
    if blocks == 1:  # block_share: one rotation for every block
        r = r.expand(in_features // size, size, size)
    return torch.block_diag(*r)


def _neumann(q: torch.Tensor, eye: torch.Tensor, terms: int) -> torch.Tensor:
    """peft's Cayley-Neumann series, term for term: I; + 2Q when terms > 1; when terms > 2, + 2Q^2 + ... +
    2Q^k + Q^(k+1) with k = max(2, terms - 2)."""
    r = eye.clone()
    if terms <= 1:
        return r
    r = r + 2.0 * q
    if terms == 2:
        return r
    power = q @ q
    r = r + 2.0 * power
    for _ in range(3, terms - 1):
        power = power @ q
        r = r + 2.0 * power
    return r + power @ q


def _block_size(n: int, where: str) -> int:
    """b with b(b-1)/2 = n."""
    size = round((1 + (1 + 8 * n) ** 0.5) / 2)
    if size * (size - 1) // 2 != n:
        raise AthanorError(f"{where}: {n} numbers per block is not b(b-1)/2 for any block size b")
    return size
