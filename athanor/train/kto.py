"""KTO (stage: kto): unpaired preferences, each reply marked desirable or not, trained on trl's KTOTrainer.

For: `run_kto(cfg)`, LLaMA-Factory's kto stage. Data as LF reads it: a sharegpt/openai/alpaca dataset whose
`columns` name a `kto_tag` (true: the last reply is desirable), or a ranking dataset whose pairs are split in two
(chosen desirable, rejected not; trl's unpairing). Each sample is rendered with the same template and labels as SFT
(encode.py) and cut into prompt and completion ids; the KL term's mismatched completions are the completions
rotated by one over the whole dataset, as LF's feedback processor builds them, so a batch of one works.
pref_beta is KTO's beta, kto_chosen_weight / kto_rejected_weight its desirable / undesirable weights. The
reference is the base (LoRA off) or a frozen copy for full/freeze tuning.

Not for: paired preferences (dpo.py) or reward models (rm.py).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from athanor.errors import AthanorError
from athanor.text.tokenizer import Tokenizer
from athanor.train.callbacks import LOG_FILE, JsonlLogCallback, plot_loss
from athanor.train.config import TrainConfig
from athanor.train.optimizers import install_optimizer
from athanor.train.prompt_reply import infer_seqlen, split_last_reply
from athanor.train.sft import (
    base_and_tokenizer,
    describe_launch,
    load_model,
    resume_arg,
    save_model,
    save_pissa_init,
    save_side_files,
    training_arguments,
    with_system,
)


@dataclass
class Feedback:
    """One prompt and one reply with its tag (desirable or not)."""

    prompt: list[dict]
    reply: dict
    desirable: bool
    tools: list[dict] | None = None


def run_kto(cfg: TrainConfig, echo: Callable[[str], None] = print) -> Path:
    assert cfg.stage == "kto", "run_kto only runs stage: kto"
    resume = resume_arg(cfg, echo)
    base, gguf, tokenizer = base_and_tokenizer(cfg)
    train_rows = feedback_rows(cfg, tokenizer, cfg.dataset, echo)
    eval_rows = feedback_rows(cfg, tokenizer, cfg.eval_dataset, echo) if cfg.eval_dataset else []
    if not cfg.eval_dataset and cfg.val_size:
        from athanor.train.sft import _split

        train_rows, eval_rows = _split(train_rows, cfg.val_size, cfg.seed)
    good = sum(r["label"] for r in train_rows)
    echo(f"{len(train_rows)} feedback samples ({good} desirable, {len(train_rows) - good} undesirable), "
         f"{len(eval_rows)} held out")
    if good in (0, len(train_rows)):
        echo("warning: the dataset has only one kind of feedback (LLaMA-Factory warns the same)")
    model = load_model(cfg, base, gguf)
    save_pissa_init(cfg, model)
    trainer = _trainer(cfg, model, tokenizer, train_rows, eval_rows)
    if launch := describe_launch(trainer.args):
        echo(launch)
    with torch.enable_grad():  # see sft.run_sft: our inference engine turns autograd off process-wide
        trainer.train(resume_from_checkpoint=resume)
    out = Path(cfg.output_dir)
    if _is_peft(trainer.model) and "ref" in trainer.model.peft_config:  # trl's frozen copy of the initial adapter
        trainer.model.delete_adapter("ref")
    save_model(trainer, out)
    save_side_files(cfg, base, tokenizer, out)
    plot_loss(out / LOG_FILE)
    return out


# ------------------------------------------------------------------------------------------------ data


def load_feedback(names: list[str], dataset_dir: str, max_samples: int | None) -> list[Feedback]:
    """The datasets `names` as feedback samples: kto_tag datasets as they are, ranking datasets unpaired."""
    from athanor.data.formats import RecordError, parse_record, read_records
    from athanor.data.registry import DatasetError, draw_samples, resolve_dataset

    out: list[Feedback] = []
    for name in names:
        spec = resolve_dataset(name, dataset_dir)
        records = [r for path in spec.files or [spec.path] for r in read_records(path)]
        if spec.num_samples is not None:
            records = draw_samples(records, spec.num_samples)
        records = records[:max_samples] if max_samples is not None else records
        tag = spec.columns.get("kto_tag")
        for i, record in enumerate(records):
            try:
                sample = parse_record(record, spec.formatting, spec.columns, spec.ranking, spec.tags)
                out += _feedback(sample, record, tag)
            except RecordError as e:
                raise DatasetError(f"{name}: record #{i}: {e}") from None
    return out


def _feedback(sample: Any, record: dict, tag_column: str | None) -> list[Feedback]:
    from athanor.data.formats import PreferencePair, RecordError

    if isinstance(sample, PreferencePair):  # unpaired: the chosen reply is desirable, the rejected one is not
        return [Feedback(sample.prompt, sample.chosen, True, sample.tools),
                Feedback(sample.prompt, sample.rejected, False, sample.tools)]
    tag = record.get(tag_column) if tag_column else None
    if not isinstance(tag, bool):
        raise RecordError(f"kto_tag column {tag_column!r} must be true or false, got {tag!r}")
    messages = sample.messages
    if messages[-1]["role"] != "assistant":
        raise RecordError("the last turn must be the assistant reply the kto_tag judges")
    return [Feedback(messages[:-1], messages[-1], tag, sample.tools)]


def feedback_rows(cfg: TrainConfig, tokenizer: Tokenizer, names: list[str], echo: Callable[[str], None] = print
                  ) -> list[dict]:
    """Tokenized rows for trl: prompt_ids, completion_ids (the reply and its stop token), KL_completion_ids (the
    previous sample's completion), label."""
    samples = load_feedback(names, cfg.dataset_dir, cfg.max_samples)
    rows = []
    for s in samples:
        row = encode_feedback(tokenizer, with_system(s.prompt, cfg.default_system) + [s.reply], s.tools,
                              cfg.cutoff_len)
        if row is not None:
            rows.append({**row, "label": s.desirable})
    if not rows:
        raise AthanorError(f"no sample keeps reply tokens within cutoff_len={cfg.cutoff_len}; raise it")
    echo(f"{len(rows)} of {len(samples)} samples keep reply tokens within cutoff_len={cfg.cutoff_len}")
    return with_kl_completions(rows)


def encode_feedback(tokenizer: Tokenizer, messages: list[dict], tools: list[dict] | None,
                    cutoff_len: int) -> dict | None:
    """{prompt_ids, completion_ids}: the tokens before the last reply, and the last reply through its stop token,
    both cut to share cutoff_len as LF's infer_seqlen shares it (each keeps its start)."""
    prompt, reply = split_last_reply(tokenizer, messages, tools)
    if not reply:
        return None
    source_len, target_len = infer_seqlen(len(prompt), len(reply), cutoff_len)
    return {"prompt_ids": prompt[:source_len], "completion_ids": reply[:target_len]}


def with_kl_completions(rows: list[dict]) -> list[dict]:
    """LF's KL samples: each prompt with the completion of the sample before it (the last one's for the first)."""
    shifted = [rows[-1]["completion_ids"]] + [r["completion_ids"] for r in rows[:-1]]
    return [{**r, "KL_completion_ids": kl} for r, kl in zip(rows, shifted)]


# ------------------------------------------------------------------------------------------------ trainer


def kto_arguments(cfg: TrainConfig, has_eval: bool) -> Any:
    """The shared TrainingArguments as trl's KTOConfig, with KTO's beta and weights."""
    import dataclasses

    from trl import KTOConfig

    base = training_arguments(cfg, has_eval)
    kwargs = {f.name: getattr(base, f.name) for f in dataclasses.fields(base) if f.init and hasattr(base, f.name)}
    kwargs = {k: v for k, v in kwargs.items() if k in {f.name for f in dataclasses.fields(KTOConfig)}}
    kwargs.update(beta=cfg.pref_beta, desirable_weight=cfg.kto_chosen_weight,
                  undesirable_weight=cfg.kto_rejected_weight, max_length=cfg.cutoff_len, loss_type="kto",
                  train_sampling_strategy="sequential", dataset_num_proc=None, model_init_kwargs=None)
    return KTOConfig(**kwargs)


def _trainer(cfg: TrainConfig, model: Any, tokenizer: Tokenizer, train_rows: list[dict], eval_rows: list[dict]
             ) -> Any:
    from datasets import Dataset
    from transformers import PreTrainedTokenizerFast

    trainer_cls = kto_trainer_class()
    hf_tokenizer = PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend, eos_token=tokenizer.eos_token,
                                           pad_token=tokenizer.eos_token)
    args = kto_arguments(cfg, bool(eval_rows))
    batch = args.per_device_train_batch_size
    # trl refuses a batch of one and shuffling because it rotates completions *within* a fixed-order batch for the
    # KL term; ours are rotated over the whole dataset (LF's way), so both are sound: build the trainer with two and
    # sequential, then train with the real batch and shuffled, as LF does.
    args.per_device_train_batch_size = max(batch, 2)
    ref = None if _is_peft(model) else _frozen_copy(model)
    trainer = trainer_cls(
        model=model, ref_model=ref, args=args, train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None, processing_class=hf_tokenizer,
        callbacks=[JsonlLogCallback(Path(cfg.output_dir))],
    )
    install_optimizer(trainer, cfg, model)  # LoRA+, GaLore, APOLLO, BAdam, Adam-mini, Muon (optimizers.py)
    args.per_device_train_batch_size = batch
    args.train_sampling_strategy = "random"
    trainer._train_batch_size = args.train_batch_size
    return trainer


def kto_trainer_class() -> type:
    from trl import KTOTrainer

    class PretokenizedKTOTrainer(KTOTrainer):
        """trl's KTOTrainer on rows athanor tokenized (prompt_ids, completion_ids, KL_completion_ids, label)."""

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            return dataset

    return PretokenizedKTOTrainer


def _is_peft(model: Any) -> bool:
    return hasattr(model, "peft_config")


def _frozen_copy(model: Any) -> Any:
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref
