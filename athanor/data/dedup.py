"""`athanor data dedup`: drop exact duplicates and MinHash near-duplicates of conversations, first one kept.

For: whole samples (every turn's role and text, tool calls included) compared after normalising case and
whitespace. Exact duplicates by hash; near duplicates by MinHash LSH (datasketch) over character 5-grams, with a
Jaccard threshold. Preference pairs are compared on prompt + chosen.

Not for: decontaminating against eval sets or filtering by quality (clean.py), or tokenization.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from athanor.data.formats import Conversation, PreferencePair

NGRAM = 5  # character shingles: robust for short chat turns, where word n-grams are too few


@dataclass
class DedupResult:
    kept: list[Conversation | PreferencePair]
    exact: list[tuple[int, int]] = field(default_factory=list)  # (dropped index, index of the kept original)
    near: list[tuple[int, int]] = field(default_factory=list)

    def summary(self) -> str:
        return f"{len(self.kept)} kept, {len(self.exact)} exact duplicates, {len(self.near)} near duplicates dropped"


def sample_text(sample: Conversation | PreferencePair) -> str:
    """The normalised text two samples are compared on."""
    messages = sample.prompt + [sample.chosen] if isinstance(sample, PreferencePair) else sample.messages
    lines = [f"{m['role']}: {m.get('content') or ''} {json.dumps(m.get('tool_calls') or '', sort_keys=True)}"
             for m in messages]
    return " ".join("\n".join(lines).lower().split())


def dedup_samples(samples: list[Conversation | PreferencePair], near_threshold: float | None = 0.9,
                  num_perm: int = 128) -> DedupResult:
    """Keep the first of every group of duplicates; `near_threshold` None -> exact duplicates only."""
    lsh = _lsh(near_threshold, num_perm) if near_threshold is not None else None
    seen: dict[str, int] = {}
    result = DedupResult([])
    for i, sample in enumerate(samples):
        text = sample_text(sample)
        digest = hashlib.sha1(text.encode()).hexdigest()
        if digest in seen:
            result.exact.append((i, seen[digest]))
            continue
        seen[digest] = i
        if lsh is not None:
            signature = _minhash(text, num_perm)
            hits = lsh.query(signature)
            if hits:
                result.near.append((i, min(int(h) for h in hits)))
                continue
            lsh.insert(str(i), signature)
        result.kept.append(sample)
    return result


def _lsh(threshold: float, num_perm: int):
    from datasketch import MinHashLSH

    if not 0 < threshold <= 1:
        raise ValueError(f"near-duplicate threshold must be in (0, 1], got {threshold}")
    return MinHashLSH(threshold=threshold, num_perm=num_perm)


def _minhash(text: str, num_perm: int):
    from datasketch import MinHash

    m = MinHash(num_perm=num_perm)
    shingles = {text[k:k + NGRAM] for k in range(max(1, len(text) - NGRAM + 1))}
    m.update_batch([s.encode() for s in shingles])
    return m


def dedup_dataset(name: str, out_path: str | Path, dataset_dir: str | Path | None = None,
                  near_threshold: float | None = 0.9) -> DedupResult:
    """Dedup one dataset's valid samples and write the kept ones as OpenAI-messages JSONL."""
    from athanor.data.convert import to_openai
    from athanor.data.registry import load_samples, resolve_dataset

    samples, _ = load_samples(resolve_dataset(name, dataset_dir))
    result = dedup_samples(samples, near_threshold)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with open(out_path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(to_openai(s), ensure_ascii=False) + "\n" for s in result.kept)
    return result
