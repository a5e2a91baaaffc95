"""Named datasets and up-front validation: name or path -> records -> checked samples, with a report.

For: the registry file `dataset_info.json` (LLaMA-Factory's: name -> file_name, formatting, ranking, columns),
resolving a config's `dataset` entry (a registry name or a file path), and `load_samples`, which parses *every*
record before training and reports how many are valid, how many are not, and the first bad record with its reason.

Not for: record formats themselves (formats.py) or tokenization (train/tokenize.py).
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path

from athanor.data.formats import (
    FORMATS,
    Conversation,
    PreferencePair,
    RecordError,
    parse_record,
    read_records,
    sniff_format,
)
from athanor.errors import AthanorError

REGISTRY_FILE = "dataset_info.json"


class DatasetError(AthanorError):
    """A dataset that cannot be found, read, or has invalid records."""


@dataclass
class DatasetSpec:
    """Where a dataset lives and how to read it."""

    name: str
    path: Path
    formatting: str = "alpaca"
    ranking: bool = False  # chosen/rejected preference pairs (DPO)
    columns: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)  # sharegpt: role_tag, content_tag, user_tag, ...
    files: list[Path] = field(default_factory=list)  # every file when file_name is a folder or a glob
    num_samples: int | None = None  # LF: draw this many records (a permutation, then repeats when larger)


@dataclass
class ValidationReport:
    """What `load_samples` found: counts and the first bad record (index, reason, the record itself)."""

    name: str
    num_valid: int = 0
    num_invalid: int = 0
    first_error: tuple[int, str, object] | None = None

    def summary(self) -> str:
        line = f"{self.name}: {self.num_valid} valid, {self.num_invalid} invalid"
        if self.first_error:
            index, reason, record = self.first_error
            shown = json.dumps(record, ensure_ascii=False, default=str)
            shown = shown if len(shown) <= 200 else shown[:200] + "..."
            line += f"; first bad record #{index}: {reason}: {shown}"
        return line


# --------------------------------------------------------------------------------------------- registry


def read_registry(dataset_dir: str | Path | None) -> dict[str, dict]:
    """The registry entries of `dataset_dir/dataset_info.json` ({} when there is none)."""
    file = Path(dataset_dir or ".") / REGISTRY_FILE
    if not file.is_file():
        return {}
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DatasetError(f"{file}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{file}: expected an object of name -> dataset entry")
    return data


def resolve_dataset(name: str, dataset_dir: str | Path | None = None) -> DatasetSpec:
    """A registry name (looked up in dataset_dir/dataset_info.json) or a file path -> DatasetSpec."""
    base = Path(dataset_dir or ".")
    registry = read_registry(base)
    if name in registry:
        return _spec_from_entry(name, registry[name], base)
    path = Path(name).expanduser()
    path = path if path.is_absolute() or path.exists() else base / path
    if path.is_file():
        return _spec_from_file(name, path)
    close = difflib.get_close_matches(name, list(registry), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise DatasetError(f"{name!r} is neither a file nor a name in {base / REGISTRY_FILE}{hint}")


HUB_KEYS = ("hf_hub_url", "ms_hub_url", "om_hub_url")
MEDIA_COLUMNS = ("images", "videos", "audios")


def _spec_from_entry(name: str, entry: dict, base: Path) -> DatasetSpec:
    """A dataset_info.json entry, read as LLaMA-Factory reads it."""
    check_local_entry(name, entry)
    formatting = entry.get("formatting", "alpaca")
    if formatting not in FORMATS:
        raise DatasetError(f"{name}: formatting {formatting!r} is not one of {', '.join(FORMATS)}")
    files = _entry_files(name, base, str(entry["file_name"]))
    columns = entry.get("columns") or {}
    tags = entry.get("tags") or {}
    if not isinstance(columns, dict) or not isinstance(tags, dict):
        raise DatasetError(f"{name}: columns and tags must be objects of name -> name")
    media = sorted(k for k in MEDIA_COLUMNS if k in columns)
    if media:
        raise DatasetError(f"{name}: has {'/'.join(media)} columns; athanor trains text models, so multimodal "
                           "datasets are not supported")
    num = entry.get("num_samples")
    if num is not None and (not isinstance(num, int) or num < 1):
        raise DatasetError(f"{name}: num_samples must be a positive integer (got {num!r})")
    return DatasetSpec(name, files[0], formatting, bool(entry.get("ranking", False)), columns, tags, files, num)


def check_local_entry(name: str, entry: object) -> None:
    """An entry must name a local file_name; a hub URL wins over file_name in LLaMA-Factory, so it is refused."""
    if not isinstance(entry, dict):
        raise DatasetError(f"{name}: registry entry must be an object")
    hub = next((entry[k] for k in HUB_KEYS if entry.get(k)), None)
    if hub is not None:
        raise DatasetError(f"{name}: this dataset is on the hub ({hub}); download it to a file and name that file "
                           "in file_name instead of the hub URL")
    if entry.get("script_url") or entry.get("cloud_file_name"):
        what = "a loading script" if entry.get("script_url") else "a cloud file"
        raise DatasetError(f"{name}: {what} is not supported; download the data to a file and set file_name")
    if "file_name" not in entry:
        raise DatasetError(f"{name}: registry entry needs a file_name")


def _entry_files(name: str, base: Path, file_name: str) -> list[Path]:
    """file_name: a file, a folder (every file in it, as LF loads them) or a glob pattern."""
    path = base / file_name
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    else:
        files = sorted(p for p in base.glob(file_name) if p.is_file()) if any(c in file_name for c in "*?[") else []
    if not files:
        raise DatasetError(f"{name}: file {path} not found")
    suffixes = {p.suffix for p in files}
    if len(suffixes) > 1:
        raise DatasetError(f"{name}: files under {file_name} have different types ({', '.join(sorted(suffixes))})")
    return files


def _spec_from_file(name: str, path: Path) -> DatasetSpec:
    try:
        records = read_records(path)
    except RecordError as e:
        raise DatasetError(str(e)) from None
    if not records:
        raise DatasetError(f"{path}: no records")
    try:
        formatting, ranking = sniff_format(records[0])
    except RecordError as e:
        raise DatasetError(f"{path}: first record: {e}") from None
    return DatasetSpec(name, path, formatting, ranking)


# --------------------------------------------------------------------------------------------- loading


def load_samples(spec: DatasetSpec, max_samples: int | None = None
                 ) -> tuple[list[Conversation | PreferencePair], ValidationReport]:
    """Parse every record (up to max_samples); bad ones are counted, not raised."""
    try:
        records = [r for path in spec.files or [spec.path] for r in read_records(path)]
    except RecordError as e:
        raise DatasetError(str(e)) from None
    if spec.num_samples is not None:
        records = draw_samples(records, spec.num_samples)
    if max_samples is not None:
        records = records[:max_samples]
    report = ValidationReport(spec.name)
    samples = []
    for i, record in enumerate(records):
        try:
            samples.append(parse_record(record, spec.formatting, spec.columns, spec.ranking, spec.tags))
        except RecordError as e:
            report.num_invalid += 1
            report.first_error = report.first_error or (i, str(e), record)
    report.num_valid = len(samples)
    return samples, report


def draw_samples(records: list, num: int, seed: int = 42) -> list:
    """LLaMA-Factory's num_samples: a random permutation cut to `num`, topped up with random repeats if larger."""
    import random

    rng = random.Random(seed)
    order = list(range(len(records)))
    rng.shuffle(order)
    order = order[:num] + [rng.randrange(len(records)) for _ in range(num - len(order))] if records else []
    return [records[i] for i in order]


def load_datasets(names: list[str], dataset_dir: str | Path | None = None, max_samples: int | None = None,
                  allow_invalid: bool = False) -> tuple[list[Conversation | PreferencePair], list[ValidationReport]]:
    """Load and validate every dataset; raise DatasetError (all reports) if any record is bad, unless allowed."""
    samples: list = []
    reports = []
    for name in names:
        got, report = load_samples(resolve_dataset(name, dataset_dir), max_samples)
        samples += got
        reports.append(report)
    bad = [r for r in reports if not r.num_valid or (r.num_invalid and not allow_invalid)]
    if bad:
        raise DatasetError("invalid dataset records (fix them, or drop them with allow_invalid):\n"
                           + "\n".join(f"  - {r.summary()}" for r in bad))
    return samples, reports


def validate_datasets(names: list[str], dataset_dir: str | Path | None = None) -> list[ValidationReport]:
    """`athanor data validate`: one report per dataset (counts and the first bad record); raises only when a
    dataset cannot be found or read at all."""
    return [load_samples(resolve_dataset(name, dataset_dir))[1] for name in names]
