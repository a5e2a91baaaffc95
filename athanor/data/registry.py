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


def _spec_from_entry(name: str, entry: dict, base: Path) -> DatasetSpec:
    if not isinstance(entry, dict) or "file_name" not in entry:
        raise DatasetError(f"{name}: registry entry needs a file_name")
    formatting = entry.get("formatting", "alpaca")
    if formatting not in FORMATS:
        raise DatasetError(f"{name}: formatting {formatting!r} is not one of {', '.join(FORMATS)}")
    path = base / entry["file_name"]
    if not path.is_file():
        raise DatasetError(f"{name}: file {path} not found")
    columns = entry.get("columns") or {}
    if not isinstance(columns, dict):
        raise DatasetError(f"{name}: columns must map roles to column names")
    return DatasetSpec(name, path, formatting, bool(entry.get("ranking", False)), columns)


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
        records = read_records(spec.path)
    except RecordError as e:
        raise DatasetError(str(e)) from None
    if max_samples is not None:
        records = records[:max_samples]
    report = ValidationReport(spec.name)
    samples = []
    for i, record in enumerate(records):
        try:
            samples.append(parse_record(record, spec.formatting, spec.columns, spec.ranking))
        except RecordError as e:
            report.num_invalid += 1
            report.first_error = report.first_error or (i, str(e), record)
    report.num_valid = len(samples)
    return samples, report


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
