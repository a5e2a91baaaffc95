"""Plain-text data for stage: pt (continued pretraining): texts -> token rows with the loss on every token.

For: `load_texts` (a .txt file is one sample per non-empty line; json/jsonl/csv/parquet records give their `text`
column, or the column a registry entry maps with `columns: {prompt: ...}` as in LLaMA-Factory), validated up
front like chat data (counts and the first bad record), and `encode_texts` (BOS when the tokenizer adds one,
EOS after every text, long texts split into cutoff_len pieces rather than cut). Packing then goes through
encode.pack_examples, so samples sharing a row never attend to each other.

Not for: chat data or templates (encode.py; pt ignores `template`) or the training loop (sft.py runs both).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from athanor.data.registry import REGISTRY_FILE, DatasetError, ValidationReport, check_local_entry, read_registry
from athanor.errors import AthanorError
from athanor.train.encode import Example

if TYPE_CHECKING:
    from athanor.text.tokenizer import Tokenizer

TEXT_COLUMN = "text"


def resolve_text_dataset(name: str, dataset_dir: str | Path | None) -> tuple[Path, str]:
    """(file, text column) for a registry name or a file path."""
    base = Path(dataset_dir or ".")
    registry = read_registry(base)
    if name in registry:
        entry = registry[name]
        check_local_entry(name, entry)
        if entry.get("ranking"):
            raise DatasetError(f"{name} holds preference pairs; stage: pt needs plain text")
        columns = entry.get("columns") or {}
        path, column = base / entry["file_name"], columns.get("prompt", columns.get("text", TEXT_COLUMN))
    else:
        path = Path(name).expanduser()
        path, column = (path if path.is_absolute() or path.exists() else base / path), TEXT_COLUMN
    if not path.is_file():
        raise DatasetError(f"{name!r} is neither a file nor a name in {base / REGISTRY_FILE}")
    return path, column


def load_texts(name: str, dataset_dir: str | Path | None, max_samples: int | None = None
               ) -> tuple[list[str], ValidationReport]:
    """Every text of one dataset, checked: a record without a non-empty string in the text column is invalid."""
    from athanor.data.formats import RecordError, read_records

    path, column = resolve_text_dataset(name, dataset_dir)
    report = ValidationReport(name)
    if path.suffix.lower() == ".txt":
        texts = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        texts = texts[:max_samples] if max_samples else texts
        report.num_valid = len(texts)
        return texts, report
    try:
        records = read_records(path)
    except RecordError as e:
        raise DatasetError(f"{e} (stage: pt also reads .txt, one sample per line)") from None
    texts = []
    for i, record in enumerate(records[:max_samples] if max_samples else records):
        value = record.get(column) if isinstance(record, dict) else None
        if isinstance(value, str) and value.strip():
            texts.append(value)
            continue
        report.num_invalid += 1
        report.first_error = report.first_error or (i, f"no non-empty string in column {column!r}", record)
    report.num_valid = len(texts)
    return texts, report


def load_all_texts(names: list[str], dataset_dir: str | Path | None, max_samples: int | None = None
                   ) -> tuple[list[str], list[ValidationReport]]:
    texts, reports = [], []
    for name in names:
        got, report = load_texts(name, dataset_dir, max_samples)
        texts += got
        reports.append(report)
    bad = [r for r in reports if not r.num_valid or r.num_invalid]
    if bad:
        raise DatasetError("invalid text records (each needs a non-empty text):\n"
                           + "\n".join(f"  - {r.summary()}" for r in bad))
    return texts, reports


def encode_texts(tokenizer: Tokenizer, texts: list[str], cutoff_len: int) -> list[Example]:
    """One example per text (or per cutoff_len piece of a long one): [BOS] text EOS, every token a label."""
    bos = [tokenizer.bos_token_id] if tokenizer.add_bos_token and tokenizer.bos_token_id is not None else []
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    if not eos:
        raise AthanorError("the tokenizer has no eos_token, which stage: pt appends after every text")
    out = []
    for ids in tokenizer.backend.encode_batch(texts, add_special_tokens=False):
        tokens = bos + ids.ids + eos
        for start in range(0, len(tokens), cutoff_len):
            piece = tokens[start:start + cutoff_len]
            if len(piece) > 1:  # a lone token has nothing to predict
                out.append(Example(piece, list(piece)))
    return out
