"""`streaming: true` (stage: sft): records are read, parsed and tokenized lazily while training, as LF's streaming.

For: `stream_datasets(cfg, tokenizer)`, which returns a torch IterableDataset over the training datasets (Hugging Face
`datasets` in streaming mode, shuffled through a `buffer_size` buffer with the config's seed) and the held-out rows:
eval_dataset read whole, or with an integer val_size the first val_size samples of the stream (LF takes them the
same way and trains on the rest). The trainer runs max_steps optimizer steps (config checks require it) and starts
the stream over when it ends first.

Not for: validating every record up front (a bad record stops the run when it is reached, naming it), packing or
tokenized_path (refused with streaming), preference stages.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import torch

from athanor.data.registry import DatasetError
from athanor.train.encode import Example, encode_conversation

if TYPE_CHECKING:
    from athanor.text.tokenizer import Tokenizer
    from athanor.train.config import TrainConfig

BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


class StreamDataset(torch.utils.data.IterableDataset):
    """Examples from the config's datasets, one after another, each stream shuffled through a buffer; the first
    `skip` records (the held-out ones) are left out before shuffling, so no pass ever trains on them."""

    def __init__(self, cfg: TrainConfig, tokenizer: Tokenizer, skip: int = 0) -> None:
        self.cfg, self.tokenizer, self.skip = cfg, tokenizer, skip
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:  # a new shuffle order per pass over the stream
        self.epoch = epoch

    def __iter__(self) -> Iterator[Example]:
        return examples_of(self.cfg, self.tokenizer, self.cfg.seed + self.epoch, self.skip)


def examples_of(cfg: TrainConfig, tokenizer: Tokenizer, seed: int | None, skip: int = 0) -> Iterator[Example]:
    """Tokenized examples of cfg.dataset in stream order, after the first `skip` records (shuffled when seed is not
    None); samples that keep no reply token within cutoff_len are left out, as in the non-streaming path."""
    from athanor.data.formats import RecordError, parse_record
    from athanor.data.registry import resolve_dataset
    from athanor.train.sft import with_system

    for name in cfg.dataset:
        spec = resolve_dataset(name, cfg.dataset_dir)
        stream, skipped = _stream(spec, seed, cfg.buffer_size, skip)
        skip -= skipped
        for record in stream:
            try:
                sample = parse_record(record, spec.formatting, spec.columns, spec.ranking, spec.tags)
            except RecordError as e:
                raise DatasetError(f"{name}: streamed record: {e}") from None
            ex = encode_conversation(tokenizer, with_system(sample.messages, cfg.default_system), sample.tools,
                                     cutoff_len=cfg.cutoff_len, mask_history=cfg.mask_history,
                                     train_on_prompt=cfg.train_on_prompt)
            if ex.num_label_tokens:
                yield ex


def _stream(spec, seed: int | None, buffer_size: int, skip: int) -> tuple[object, int]:
    """(a `datasets` IterableDataset over the spec's files after its first `skip` records, records skipped)."""
    from datasets import load_dataset

    files = [str(p) for p in spec.files or [spec.path]]
    builder = BUILDERS.get(spec.path.suffix.lower())
    if builder is None:
        raise DatasetError(f"{spec.name}: streaming reads .json, .jsonl, .csv and .parquet files "
                           f"(got {spec.path.name})")
    stream = load_dataset(builder, data_files=files, split="train", streaming=True)
    skipped = 0
    if skip:
        skipped = sum(1 for _ in stream.take(skip))
        stream = stream.skip(skip)
    return (stream.shuffle(seed=seed, buffer_size=buffer_size) if seed is not None else stream), skipped


def stream_datasets(cfg: TrainConfig, tokenizer: Tokenizer, echo: Callable[[str], None] = print
                    ) -> tuple[StreamDataset, list[Example]]:
    """(training stream, held-out rows)."""
    from athanor.train.sft import _examples

    if cfg.eval_dataset:
        held_out = _examples(cfg, cfg.eval_dataset, tokenizer, echo)
        skip = 0
    else:  # LF: the first val_size samples of the stream are held out
        skip = int(cfg.val_size)
        held_out = [ex for _, ex in zip(range(skip), examples_of(cfg, tokenizer, None))] if skip else []
    first = next(iter(StreamDataset(cfg, tokenizer, skip)), None)  # the first record is checked before the model
    if first is None:
        raise DatasetError(f"streaming: no sample keeps any assistant token within cutoff_len={cfg.cutoff_len} "
                           f"(after {skip} held out)")
    echo(f"streaming {', '.join(cfg.dataset)} (shuffle buffer {cfg.buffer_size}) for {cfg.max_steps} steps; "
         f"{len(held_out)} held out")
    return StreamDataset(cfg, tokenizer, skip), held_out
