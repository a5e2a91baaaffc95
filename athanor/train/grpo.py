"""stage: grpo (athanor's extension; LLaMA-Factory has no GRPO stage): online RL with rewards from Python functions,
on trl's GRPOTrainer.

For: `run_grpo(cfg)`. The prompts are the SFT datasets' conversations up to their last assistant turn, rendered with
the config's template (add_generation_prompt), and that turn's text is passed to the rewards as `answer`. For each
prompt trl samples `grpo_num_generations` completions (`grpo_max_completion_length` new tokens at
`grpo_temperature`, stopping at the template's stop tokens), scores them with every function of `reward_funcs`
(weighted by `reward_weights`), normalises the rewards within each group and takes a clipped policy-gradient step
(`grpo_epsilon`, `grpo_loss_type`, `grpo_beta` x KL to the starting model). The method keys (lora/full/freeze,
Muon) and the optimisation keys mean what they mean for sft; the output folder is laid out like sft's.

A reward function is `module:function` (importable from the working directory or PYTHONPATH) or
`path/to/file.py:function` (relative to the working directory, else to dataset_dir). It is called as
`f(prompts=[str], completions=[str], answer=[str], **kwargs)` (trl's reward-function call: kwargs carry
`completion_ids`, `trainer_state` and any other dataset column) and returns one float (or None) per completion.

Not for: reward models (stage: rm trains one; a model as reward is not wired here), vLLM generation, eval.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from athanor.errors import AthanorError


class RewardError(AthanorError):
    """A reward_funcs entry that cannot be loaded; the message is one line."""


def load_reward_func(spec: str, dataset_dir: str | None = None) -> Callable[..., list[float | None]]:
    """The function `module:function` or `file.py:function` names; RewardError (one line) when it cannot be loaded."""
    where, sep, name = spec.rpartition(":")
    if not sep or not where or not name:
        raise RewardError(f"{spec!r}: expected module:function or path/to/file.py:function")
    try:
        module = _load_file(spec, where, dataset_dir) if where.endswith(".py") else importlib.import_module(where)
    except RewardError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure of the user's module: named, in one line
        raise RewardError(" ".join(f"{spec!r}: importing {where} failed: {type(e).__name__}: {e}".split())) from None
    func = getattr(module, name, None)
    if not callable(func):
        raise RewardError(f"{spec!r}: {where} has no function {name!r}")
    return func


def _load_file(spec: str, where: str, dataset_dir: str | None) -> Any:
    path = Path(where).expanduser()
    candidates = [path] if path.is_absolute() else [Path.cwd() / path]
    if dataset_dir and not path.is_absolute():
        candidates.append(Path(dataset_dir) / path)
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise RewardError(f"{spec!r}: no file {where} (looked in {', '.join(str(c.parent) for c in candidates)})")
    module_name = f"athanor_reward_{abs(hash(str(found.resolve())))}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    loader = importlib.util.spec_from_file_location(module_name, found)
    assert loader is not None and loader.loader is not None
    module = importlib.util.module_from_spec(loader)
    sys.modules[module_name] = module
    try:
        loader.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def checked_reward(func: Callable[..., Any]) -> Callable[..., list[float | None]]:
    """`func` with its answer checked: one number (or None) per completion, else a one-line error naming it."""
    name = getattr(func, "__name__", "reward")

    def reward(prompts: list, completions: list, **kwargs: Any) -> list[float | None]:
        got = func(prompts=prompts, completions=completions, **kwargs)
        values = list(got) if isinstance(got, (list, tuple)) else None
        if values is None or len(values) != len(completions):
            count = len(values) if values is not None else "?"
            raise AthanorError(f"reward function {name} returned {type(got).__name__} of {count} values for "
                               f"{len(completions)} completions")
        try:
            return [None if v is None else float(v) for v in values]
        except (TypeError, ValueError):
            raise AthanorError(f"reward function {name} returned a non-number: {values[:4]!r}") from None

    reward.__name__ = name  # trl logs rewards/<name>
    return reward


# ------------------------------------------------------------------------------------------------ data


def grpo_prompts(cfg: Any, tokenizer: Any, echo: Callable[[str], None] = print) -> list[dict[str, str]]:
    """{"prompt": rendered text ending in the assistant's header, "answer": the dataset's reply} per sample."""
    from athanor.data.registry import load_datasets
    from athanor.train.sft import with_system

    samples, reports = load_datasets(cfg.dataset, cfg.dataset_dir, cfg.max_samples)
    for report in reports:
        echo(f"dataset {report.summary()}")
    rows, too_long = [], 0
    for sample in samples:
        messages = with_system(sample.messages, cfg.default_system)
        last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=len(messages))
        answer = (messages[last].get("content") or "") if last < len(messages) else ""
        prompt = tokenizer.apply_chat_template(messages[:last], add_generation_prompt=True, tools=sample.tools)
        if len(tokenizer.encode(prompt, add_special_tokens=False)) > cfg.cutoff_len:
            too_long += 1
            continue
        rows.append({"prompt": prompt, "answer": answer})
    if not rows:
        raise AthanorError(f"no prompt fits in cutoff_len={cfg.cutoff_len} tokens; raise it")
    dropped = f" ({too_long} longer than cutoff_len={cfg.cutoff_len} dropped)" if too_long else ""
    echo(f"{len(rows)} prompts{dropped}")
    return rows


def hf_tokenizer(tokenizer: Any) -> Any:
    """Our tokenizer as the transformers tokenizer trl needs: same vocabulary, EOS = the template's stop token."""
    import copy

    import transformers

    stop = sorted(tokenizer.stop_token_ids)
    eos_id = tokenizer.eos_token_id if tokenizer.eos_token_id in stop else (stop[0] if stop else None)
    if eos_id is None:
        raise AthanorError("stage: grpo needs a stop token to end completions; the model's tokenizer has none")
    eos = tokenizer.id_to_token(eos_id)
    return transformers.PreTrainedTokenizerFast(tokenizer_object=copy.deepcopy(tokenizer.backend), eos_token=eos,
                                                pad_token=eos, bos_token=tokenizer.bos_token)


# ------------------------------------------------------------------------------------------------ run


def run_grpo(cfg: Any, echo: Callable[[str], None] = print) -> Path:
    """Train with GRPO and save like sft; every config problem (reward functions included) raised before loading."""
    import datasets
    from trl import GRPOConfig, GRPOTrainer

    from athanor.train.callbacks import LOG_FILE, JsonlLogCallback, plot_loss
    from athanor.train.optimizers import install_optimizer
    from athanor.train.sft import (
        base_and_tokenizer,
        load_model,
        resume_arg,
        save_model,
        save_side_files,
        training_arguments,
    )

    assert cfg.stage == "grpo", "run_grpo only runs stage: grpo"
    resume = resume_arg(cfg, echo)
    base, gguf, tokenizer = base_and_tokenizer(cfg)
    rewards = [checked_reward(load_reward_func(s, cfg.dataset_dir)) for s in cfg.reward_funcs]
    prompts = datasets.Dataset.from_list(grpo_prompts(cfg, tokenizer, echo))
    model = load_model(cfg, base, gguf)
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    inner.generation_config.eos_token_id = sorted(tokenizer.stop_token_ids)
    args = training_arguments(
        cfg, False, cls=GRPOConfig, num_generations=cfg.grpo_num_generations,
        max_completion_length=cfg.grpo_max_completion_length, temperature=cfg.grpo_temperature, beta=cfg.grpo_beta,
        epsilon=cfg.grpo_epsilon, loss_type=cfg.grpo_loss_type, reward_weights=cfg.reward_weights)
    trainer = GRPOTrainer(model=model, reward_funcs=rewards, args=args, train_dataset=prompts,
                          processing_class=hf_tokenizer(tokenizer), callbacks=[JsonlLogCallback(Path(cfg.output_dir))])
    install_optimizer(trainer, cfg, model)  # LoRA+, GaLore, APOLLO, BAdam, Adam-mini, Muon (optimizers.py)
    with torch.enable_grad():  # loading our inference engine in the same process turns autograd off globally
        trainer.train(resume_from_checkpoint=resume)
    out = Path(cfg.output_dir)
    save_model(trainer, out)
    if trainer.is_world_process_zero():
        save_side_files(cfg, base, tokenizer, out)
        plot_loss(out / LOG_FILE)
    return out
