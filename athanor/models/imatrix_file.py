"""Importance-matrix files as llama.cpp's `llama-imatrix` writes them and `llama-quantize --imatrix` reads them.

Two formats, both read, the GGUF one written by default:
- GGUF (llama.cpp since mid 2025): `general.type = "imatrix"`, `imatrix.datasets` (string array),
  `imatrix.chunk_count`, `imatrix.chunk_size` (u32), and per weight tensor two F32 tensors:
  `<tensor>.in_sum2` (ne = [columns, n_mat]: raw sums of squared input activations per column) and
  `<tensor>.counts` (ne = [1, n_mat]: how many activation rows were summed). n_mat > 1 only for MoE experts.
- legacy .dat: int32 n_entries; per entry int32 name length, name bytes, int32 ncall, int32 nval,
  nval float32 values = (sum / count) * ncall; then (optional) int32 chunk count, int32 length, dataset name.
Per-column importance (what the quantizers weight errors by) is sum / count in both (llama.cpp's
tools/quantize load_imatrix: a zero count reads as all ones).
Not for: collecting the sums (models/imatrix_collect.py) or using them (gguf_quantize.py).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from athanor.errors import AthanorError

_SUMS, _COUNTS = ".in_sum2", ".counts"


@dataclass
class Entry:
    sums: np.ndarray  # (n_mat, columns) float32 raw sums of x^2
    counts: np.ndarray  # (n_mat,) activation rows behind each matrix's sums

    def importance(self) -> np.ndarray:
        """(n_mat, columns) mean squared activation per input column; ones where nothing was counted."""
        out = np.ones_like(self.sums, dtype=np.float32)
        seen = self.counts > 0
        out[seen] = self.sums[seen] / self.counts[seen, None]
        return out


@dataclass
class Imatrix:
    entries: dict[str, Entry] = field(default_factory=dict)  # GGUF weight name -> sums and counts
    datasets: list[str] = field(default_factory=list)
    chunk_count: int = 0
    chunk_size: int = 0
    legacy: bool = False  # read from a .dat file

    def weights(self, name: str) -> np.ndarray | None:
        """Per-column importance of one 2-D weight (its `columns` floats), or None when the file has no entry."""
        e = self.entries.get(name)
        return None if e is None else e.importance()[0]

    def write(self, path: str | Path) -> Path:
        return write_gguf(self, path)


# ---------------------------------------------------------------- GGUF


def write_gguf(im: Imatrix, path: str | Path) -> Path:
    import gguf

    path = Path(path)
    writer = gguf.GGUFWriter(path, arch="", endianess=gguf.GGUFEndian.LITTLE)
    writer.kv_data[0].pop("general.architecture", None)  # an imatrix names no architecture (as llama.cpp's)
    writer.add_string("general.type", "imatrix")
    writer.add_array("imatrix.datasets", list(im.datasets))
    writer.add_uint32("imatrix.chunk_count", im.chunk_count)
    writer.add_uint32("imatrix.chunk_size", im.chunk_size)
    for name in sorted(im.entries):  # deterministic order, as llama.cpp
        e = im.entries[name]
        writer.add_tensor(name + _SUMS, np.ascontiguousarray(e.sums, dtype=np.float32))
        writer.add_tensor(name + _COUNTS, np.asarray(e.counts, dtype=np.float32).reshape(-1, 1))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _read_gguf(path: Path) -> Imatrix:
    import gguf

    reader = gguf.GGUFReader(path)

    def value(key: str):
        f = reader.get_field(key)
        return None if f is None else f.contents()

    im = Imatrix(datasets=list(value("imatrix.datasets") or []), chunk_count=int(value("imatrix.chunk_count") or 0),
                 chunk_size=int(value("imatrix.chunk_size") or 0))
    parts: dict[str, dict[str, np.ndarray]] = {}
    for t in reader.tensors:
        for suffix in (_SUMS, _COUNTS):
            if t.name.endswith(suffix):
                if t.tensor_type != gguf.GGMLQuantizationType.F32:
                    raise AthanorError(f"imatrix {path}: {t.name} is {t.tensor_type.name}, expected F32")
                cols = int(t.shape[0])  # ne[0]
                parts.setdefault(t.name[: -len(suffix)], {})[suffix] = np.array(t.data, np.float32).reshape(-1, cols)
    if not parts:
        raise AthanorError(f"imatrix {path} holds no .in_sum2/.counts tensors")
    for name, p in parts.items():
        if len(p) != 2:
            raise AthanorError(f"imatrix {path}: {name} has sums without counts or counts without sums")
        sums, counts = p[_SUMS], np.rint(p[_COUNTS].reshape(-1))
        if sums.shape[0] != counts.shape[0]:
            raise AthanorError(f"imatrix {path}: {name} has {sums.shape[0]} matrices but {counts.shape[0]} counts")
        im.entries[name] = Entry(sums, counts)
    return im


# ---------------------------------------------------------------- legacy .dat


def write_dat(im: Imatrix, path: str | Path) -> Path:
    """llama.cpp's legacy format (`llama-imatrix --output-format dat`): values stored as mean * ncall."""
    path = Path(path)
    chunk = max(im.chunk_size, 1)
    out = [struct.pack("<i", len(im.entries))]
    for name in sorted(im.entries):
        e = im.entries[name]
        raw = name.encode()
        ncall = int(-(-int(e.counts.max()) // chunk)) if e.counts.size else 0
        values = (e.importance() * ncall).astype(np.float32).reshape(-1)
        out += [struct.pack("<i", len(raw)), raw, struct.pack("<ii", ncall, values.size), values.tobytes()]
    dataset = (im.datasets[-1] if im.datasets else "").encode()
    out += [struct.pack("<ii", im.chunk_count, len(dataset)), dataset]
    path.write_bytes(b"".join(out))
    return path


def _read_dat(path: Path) -> Imatrix:
    data = path.read_bytes()
    pos = 0

    def take(fmt: str):
        nonlocal pos
        size = struct.calcsize(fmt)
        if pos + size > len(data):
            raise AthanorError(f"imatrix {path} is truncated")
        vals = struct.unpack_from(fmt, data, pos)
        pos += size
        return vals

    (n,) = take("<i")
    if n < 1:
        raise AthanorError(f"imatrix {path} holds no entries")
    im = Imatrix(legacy=True)
    for _ in range(n):
        (length,) = take("<i")
        if length < 0 or pos + length > len(data):
            raise AthanorError(f"imatrix {path} is truncated")
        name = data[pos : pos + length].decode()
        pos += length
        ncall, nval = take("<ii")
        if nval < 1:
            raise AthanorError(f"imatrix {path}: entry {name!r} has no values")
        values = np.array(take(f"<{nval}f"), dtype=np.float32)
        # sums / counts == the file's values / ncall, as llama-quantize reads it (ncall 0: values as they are)
        im.entries[name] = Entry(values.reshape(1, -1), np.array([float(ncall if ncall > 0 else 1)]))
    if pos + 4 <= len(data):
        (im.chunk_count,) = take("<i")
        if pos + 4 <= len(data):
            (length,) = take("<i")
            if length > 0 and pos + length <= len(data):
                im.datasets.append(data[pos : pos + length].decode(errors="replace"))
    return im


def read_imatrix(path: str | Path) -> Imatrix:
    """Either format (GGUF by its magic, else legacy .dat), as llama.cpp's common_imatrix_load."""
    path = Path(path)
    if not path.is_file():
        raise AthanorError(f"imatrix file {path} does not exist")
    with path.open("rb") as f:
        magic = f.read(4)
    try:
        return _read_gguf(path) if magic == b"GGUF" else _read_dat(path)
    except (ValueError, UnicodeDecodeError, struct.error) as e:
        raise AthanorError(f"imatrix {path} cannot be read: {e}") from None
