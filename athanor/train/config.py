"""The training config: one YAML file with LLaMA-Factory's key names, checked before anything heavy loads.

For: the typed model of every key (`TrainConfig`), `key=value` command-line overrides, and `load_config`, which
reports unknown keys (with a "did you mean"), wrong types and impossible combinations *all together* in one
`ConfigError`, one problem per line.

Not for: running anything (sft.py), reading dataset files (data/), or DeepSpeed/FSDP configs (passed through to
accelerate as they are).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from athanor.errors import AthanorError
from athanor.train.config_checks import check_combinations
from athanor.train.optimizer_keys import OptimizerKeys


class ConfigError(AthanorError):
    """A training config with one or more problems; `problems` holds one line per problem."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = problems
        noun = "problem" if len(problems) == 1 else "problems"
        super().__init__(f"{len(problems)} {noun} in {source}:\n" + "\n".join(f"  - {p}" for p in problems))


class TrainConfig(OptimizerKeys):
    """Every key of a training YAML. Names follow LLaMA-Factory so its configs mostly run unchanged (the GaLore,
    APOLLO, BAdam and Adam-mini keys come from OptimizerKeys)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # -- model
    model_name_or_path: str = Field(description="A store name (`smollm2`), a Hugging Face model directory, or a GGUF file.")
    adapter_name_or_path: str | None = Field(None, description="LoRA adapter dir(s), comma-separated: all but the "
                                             "last are merged into the base, the last trains on (or is merged too "
                                             "with create_new_adapter).")
    template: str | None = Field(None, description="Chat template: None = the model's own; a LLaMA-Factory template "
                                 "name (llama3, qwen3_nothink, ...), 'chatml', one of the model's named templates, "
                                 "or a Jinja source string.")
    enable_thinking: bool | None = Field(None, description="Reasoning templates (qwen3, ...): true trains an empty "
                                         "thought block on replies without one; false puts it in the prompt.")
    default_system: str | None = Field(None, description="System prompt for samples that have none.")

    # -- method
    stage: Literal["pt", "sft", "dpo", "rm", "kto", "ppo", "grpo"] = Field(
        "sft", description="pt: plain text (a .txt line or a `text` column per sample), loss on every token; sft: "
        "supervised chat fine-tuning (loss on assistant tokens only); dpo: preference pairs; rm: a reward model "
        "(value head, pairwise loss) on preference pairs; kto: unpaired preferences (a kto_tag per reply, or pairs split "
        "in two) on trl's KTOTrainer; grpo (athanor's, not LLaMA-Factory's): online RL with rewards from Python "
        "functions (trl). ppo is refused (not implemented).")
    finetuning_type: Literal["lora", "full", "freeze", "oft"] = Field(
        "lora", description="lora: train low-rank adapters; full: every weight; freeze: only the last layers; oft: "
        "orthogonal fine-tuning adapters (peft OFT).")
    oft_rank: int = Field(0, ge=0, description="OFT: number of blocks per layer (0: set by oft_block_size).")
    oft_block_size: int = Field(32, ge=0, description="OFT: block size (0: set by oft_rank); exactly one is non-zero.")
    oft_target: str | list[str] = Field("all", description="OFT: 'all' linear layers or module names.")
    module_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="OFT: multiplicative dropout on blocks.")
    do_train: bool = Field(True, description="Train; false only with do_predict (predict with the model as it is).")
    do_eval: bool = Field(False, description="Evaluate on val_size / eval_dataset (also on every eval_steps when "
                          "either is set); sft: once more after training, into eval_results.json as LF does.")
    do_predict: bool = Field(False, description="sft: after training, generate a reply for each eval_dataset sample "
                             "and write generated_predictions.jsonl and predict_results.json (BLEU-4, ROUGE-1/2/L), "
                             "as LLaMA-Factory does; needs predict_with_generate.")
    predict_with_generate: bool = Field(False, description="do_predict generates replies (needs eval_dataset).")
    use_dora: bool = Field(False, description="LoRA: weight-decomposed LoRA (DoRA, peft).")
    use_rslora: bool = Field(False, description="LoRA: rank-stabilised scaling alpha / sqrt(r) (peft).")
    pissa_init: bool = Field(False, description="LoRA: initialise from the principal singular vectors (PiSSA, peft).")
    pissa_iter: int = Field(16, description="PiSSA: fast-SVD iterations; -1 = full SVD.")
    pissa_convert: bool = Field(False, description="PiSSA: save the adapter as a plain LoRA of the original base; "
                                "athanor always does (chat/export load the original base).")
    loraplus_lr_ratio: float | None = Field(None, gt=0, description="LoRA+: B matrices learn this many times faster.")
    additional_target: str | list[str] | None = Field(None, description="Modules trained fully next to the LoRA "
                                                      "(e.g. embed_tokens,lm_head), comma-separated.")
    create_new_adapter: bool = Field(False, description="With adapter_name_or_path: merge it and train a new one.")
    freeze_trainable_layers: int = Field(2, ge=1, description="finetuning_type=freeze: how many last decoder layers train.")
    lora_rank: int = Field(8, ge=1, description="LoRA rank r.")
    lora_alpha: float | None = Field(None, gt=0, description="LoRA scale numerator (scale = alpha / r); default 2 x lora_rank.")
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on the LoRA input.")
    lora_target: str | list[str] = Field("all", description="'all' (every linear layer but the LM head) or module "
                                         "names, as a list or comma-separated: 'q_proj,v_proj'.")
    quantization_bit: Literal[4, 8] | None = Field(None, description="QLoRA: load the base in 4 or 8 bits with "
                                                   "bitsandbytes (CUDA only; needs finetuning_type=lora).")

    # -- data
    dataset: list[str] = Field(default_factory=list, description="Registry names or file paths (json, jsonl, csv, "
                               "parquet); a list or comma-separated string.")
    dataset_dir: str | None = Field(None, description="Folder holding the registry file dataset_info.json, relative to "
                                    "the YAML file (default: the YAML's folder), else, as LLaMA-Factory does, to "
                                    "the working directory (default: ./data). Relative dataset paths resolve "
                                    "against it too.")
    cutoff_len: int = Field(1024, ge=8, description="Max tokens per sample (and per packed row); longer ones are cut.")
    max_samples: int | None = Field(None, ge=1, description="Use at most this many samples per dataset (for quick runs).")
    val_size: float = Field(0.0, ge=0.0, description="Held-out share (0 <= x < 1) or count (an integer >= 1) for eval.")
    eval_dataset: list[str] = Field(default_factory=list, description="Datasets held out for eval instead of a "
                                    "val_size split (registry names or paths, like dataset); all of them are eval.")
    packing: bool = Field(False, description="Pack several samples per row; positions restart per sample so samples "
                          "never attend to each other.")

    tokenized_path: str | None = Field(None, description="sft/pt: load tokenized rows from this folder when an "
                                       "earlier run saved them there, else tokenize and save them there.")
    train_on_prompt: bool = Field(False, description="sft: the prompt tokens (system, user, tool turns, template "
                                  "markup) are targets too, not only the replies.")
    mask_history: bool = Field(False, description="sft: only the last assistant turn is a target; earlier replies "
                               "are context.")
    streaming: bool = Field(False, description="sft: read and tokenize the datasets lazily while training (datasets "
                            "streaming); needs max_steps.")
    buffer_size: int = Field(16384, ge=1, description="streaming: shuffle buffer, in samples.")

    # -- output and logging
    output_dir: str = Field("output", description="Where the adapter/model, checkpoints and trainer_log.jsonl go.")
    logging_steps: int = Field(10, ge=1, description="Log loss, learning rate and tokens/s every this many steps.")
    save_steps: int = Field(500, ge=1, description="Write a checkpoint every this many optimizer steps.")
    save_strategy: Literal["steps", "epoch", "no"] = Field("steps", description="When checkpoints are written.")
    save_total_limit: int | None = Field(None, ge=1, description="Keep at most this many checkpoints.")
    save_only_model: bool = Field(False, description="Checkpoints without optimizer state (cannot be resumed).")
    eval_strategy: Literal["steps", "epoch", "no"] | None = Field(None, description="When to evaluate (default: "
                                                                  "every eval_steps when there is eval data).")
    eval_steps: int | None = Field(None, ge=1, description="Evaluate every this many steps (default save_steps).")
    per_device_eval_batch_size: int | None = Field(None, ge=1, description="Eval rows per forward (default: train's).")

    # -- optimisation
    per_device_train_batch_size: int = Field(1, ge=1, description="Rows per forward pass on each device.")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Forward passes per optimizer step.")
    learning_rate: float = Field(1e-4, gt=0, description="Peak learning rate (AdamW).")
    num_train_epochs: float = Field(3.0, gt=0, description="Passes over the data (ignored when max_steps > 0).")
    max_steps: int = Field(-1, description="Total optimizer steps; -1 = from num_train_epochs.")
    lr_scheduler_type: Literal["linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts",
                               "polynomial", "inverse_sqrt"] = Field("cosine", description="Learning-rate schedule.")
    warmup_ratio: float = Field(0.0, ge=0.0, le=1.0, description="Share of steps spent warming the learning rate up.")
    warmup_steps: int = Field(0, ge=0, description="Warm-up steps (wins over warmup_ratio when above 0).")
    optim: Literal["adamw_torch", "adamw_torch_fused", "adafactor", "sgd", "adagrad", "rmsprop"] = Field(
        "adamw_torch", description="Optimizer, as transformers names it (8-bit/paged ones need CUDA: refused).")
    adam_beta1: float = Field(0.9, ge=0, lt=1, description="AdamW beta1.")
    adam_beta2: float = Field(0.999, ge=0, lt=1, description="AdamW beta2.")
    adam_epsilon: float = Field(1e-8, gt=0, description="AdamW epsilon.")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, gt=0, description="Clip the gradient norm to this.")
    bf16: bool = Field(False, description="Mixed precision in bfloat16 (CPU autocast or a GPU that supports it).")
    fp16: bool = Field(False, description="Mixed precision in float16 (CUDA only).")
    pure_bf16: bool = Field(False, description="LLaMA-Factory's pure bf16: the model and its trainable weights are "
                            "held in bfloat16 (no fp32 master copy, half the memory); works on CPU too.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward: less memory, ~30% slower.")
    seed: int = Field(42, description="Seed for weights of new layers, data shuffling and dropout.")
    resume_from_checkpoint: str | bool | None = Field(None, description="A checkpoint folder, or true for the last "
                                                      "checkpoint in output_dir.")

    # -- preference optimisation (stage=dpo)
    pref_beta: float = Field(0.1, gt=0, description="DPO/KTO beta: how far the policy may move from the reference.")
    kto_chosen_weight: float = Field(1.0, gt=0, description="KTO: weight of the loss on desirable replies.")
    kto_rejected_weight: float = Field(1.0, gt=0, description="KTO: weight of the loss on undesirable replies.")
    pref_loss: Literal["sigmoid", "ipo", "orpo", "simpo", "hinge", "kto_pair"] = Field(
        "sigmoid", description="Preference loss (hinge and kto_pair are refused: not implemented).")
    use_dft_loss: bool = Field(False, description="SFT: weight each token's loss by its probability (DFT).")
    use_eaft_loss: bool = Field(False, description="SFT: weight each token's loss by (top-20 entropy / 3) ** eaft_alpha "
                                "(EAFT, as LLaMA-Factory).")
    eaft_alpha: float = Field(1.0, ge=0.0, description="EAFT: power of the entropy weight.")
    use_asft_loss: bool = Field(False, description="SFT: the DFT loss plus asft_alpha x KL(starting model || model) "
                                "(ASFT, as LLaMA-Factory).")
    asft_alpha: float = Field(0.1, ge=0.0, description="ASFT: weight of the KL anchor to the starting model.")
    use_muon: bool = Field(False, description="Muon on 2-D hidden weights, AdamW on the rest (torch.optim.Muon).")
    use_llama_pro: bool = Field(False, description="LLaMA Pro: train only the expanded blocks of a model made by "
                                "`athanor llama-pro` (freeze: whole blocks; lora: adapters on them).")

    # -- GRPO (stage: grpo; athanor's extension, on trl's GRPOTrainer)
    reward_funcs: list[str] = Field(default_factory=list, description="grpo: reward functions, `module:function` or "
                                    "`path/to/file.py:function`; each gets (prompts, completions, answer=..., "
                                    "**kwargs) and returns one float per completion.")
    reward_weights: list[float] | None = Field(None, description="grpo: one weight per reward function (default 1).")
    grpo_num_generations: int = Field(8, ge=2, description="grpo: completions sampled per prompt (one group).")
    grpo_max_completion_length: int = Field(256, ge=1, description="grpo: max new tokens per completion.")
    grpo_temperature: float = Field(1.0, gt=0.0, description="grpo: sampling temperature of the completions.")
    grpo_beta: float = Field(0.0, ge=0.0, description="grpo: KL coefficient to the starting model (0 = none).")
    grpo_epsilon: float = Field(0.2, gt=0.0, description="grpo: clipping range of the policy ratio.")
    grpo_loss_type: Literal["grpo", "dapo", "dr_grpo", "bnpo"] = Field("dapo", description="grpo: loss "
                                                                         "normalisation, as trl names it.")

    # -- generation (do_predict; LLaMA-Factory's GeneratingArguments, same defaults)
    do_sample: bool = Field(True, description="do_predict: sample (else greedy).")
    temperature: float = Field(0.95, ge=0, description="do_predict: sampling temperature.")
    top_p: float = Field(0.7, gt=0, le=1, description="do_predict: nucleus sampling mass.")
    top_k: int = Field(50, ge=0, description="do_predict: sample among the k likeliest tokens.")
    num_beams: int = Field(1, ge=1, description="do_predict: beam search width (1: none).")
    max_length: int = Field(1024, ge=1, description="do_predict: prompt + reply tokens, when max_new_tokens <= 0.")
    max_new_tokens: int = Field(1024, description="do_predict: reply tokens at most (wins over max_length when > 0).")
    repetition_penalty: float = Field(1.0, gt=0, description="do_predict: penalty on repeated tokens (1: none).")
    length_penalty: float = Field(1.0, description="do_predict: beam search length penalty.")
    skip_special_tokens: bool = Field(True, description="do_predict: drop special tokens from predict and label.")

    _notes: list[str] = PrivateAttr(default_factory=list)  # start-up lines: the LF keys accepted as no-ops

    @property
    def notes(self) -> list[str]:
        return self._notes

    @field_validator("dataset", "eval_dataset", mode="before")
    @classmethod
    def _split_datasets(cls, v: Any) -> Any:
        return [s.strip() for s in v.split(",") if s.strip()] if isinstance(v, str) else v

    @field_validator("reward_funcs", mode="before")
    @classmethod
    def _split_reward_funcs(cls, v: Any) -> Any:
        return [s.strip() for s in v.split(",") if s.strip()] if isinstance(v, str) else v

    @field_validator("lora_target", "additional_target", "oft_target", mode="before")
    @classmethod
    def _split_targets(cls, v: Any) -> Any:
        if isinstance(v, str) and v.strip() != "all":
            return [s.strip() for s in v.split(",") if s.strip()]
        return v

    @property
    def effective_lora_alpha(self) -> float:
        return self.lora_alpha if self.lora_alpha is not None else 2.0 * self.lora_rank


FIELD_NAMES = tuple(TrainConfig.model_fields)


# ------------------------------------------------------------------------------------------------- loading


def read_config_mapping(path: Path) -> dict:
    """A YAML config file's top-level mapping; a missing file, bad YAML or a non-mapping is a one-line error."""
    if not path.is_file():
        raise AthanorError(f"config {path}: file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise AthanorError(" ".join(f"config {path} is not valid YAML: {e}".split())) from None
    if not isinstance(raw, dict):
        raise AthanorError(f"config {path}: expected a mapping of key: value, got {type(raw).__name__}")
    return raw


def _dataset_dir(config: Path, given: str | None) -> str:
    """Where dataset_info.json and relative dataset files are looked for. Ours: relative to the YAML (default its
    folder). LLaMA-Factory's: relative to the working directory (default `data`), which is how its own
    `examples/` run from its checkout; used when the YAML-relative folder has nothing to offer."""
    here = config.parent / (given or ".")
    lf = Path(given or "data")
    if given is None:
        return str(lf if not (here / "dataset_info.json").is_file() and (lf / "dataset_info.json").is_file()
                   else here)
    return str(lf if not here.is_dir() and lf.is_dir() else here)


def load_config(path: str | Path, overrides: list[str] | None = None, *, has_cuda: bool | None = None) -> TrainConfig:
    """Read a YAML config, apply `key=value` overrides, and check everything; raise ConfigError listing all problems.

    `has_cuda` is detected when None (tests pass it to check GPU-only combinations on any machine)."""
    path = Path(path)
    raw = read_config_mapping(path)
    problems: list[str] = []
    raw.update(_parse_overrides(overrides or [], problems))
    if raw.get("do_predict") is True and "do_train" not in raw:  # LF (HF's default): a predict config without
        raw["do_train"] = False                                   # do_train only predicts
    if stage_problem := _stage_problem(raw.get("stage", "sft")):  # before anything else: it decides every check
        raise ConfigError(str(path), [stage_problem])
    # The registry and relative dataset paths live next to the YAML unless it says otherwise (_dataset_dir).
    dataset_dir = raw.get("dataset_dir") or "."
    if isinstance(dataset_dir, str) and (dataset_dir == "ONLINE" or dataset_dir.startswith("REMOTE:")):
        hub = f"dataset_dir: {dataset_dir} is on the hub; download it to a folder and set dataset_dir to that folder"
        raise ConfigError(str(path), [hub])
    raw["dataset_dir"] = _dataset_dir(path, raw.get("dataset_dir")) if isinstance(dataset_dir, str) else dataset_dir
    from athanor.train.lf_keys import LF_KEYS, refusals, start_up_notes

    lf_keys = {k: raw.pop(k) for k in list(raw) if k in LF_KEYS and k not in TrainConfig.model_fields}
    problems += refusals(lf_keys)
    if problem := _optim_problem(raw.get("optim")):
        problems.append(problem)
        raw.pop("optim")
    cfg = _validate(raw, problems)
    if cfg is not None:
        problems += check_combinations(cfg, _detect_cuda() if has_cuda is None else has_cuda)
    if problems:
        raise ConfigError(str(path), problems)
    assert cfg is not None
    cfg._notes = start_up_notes(lf_keys)
    return cfg


LF_STAGES = ("pt", "sft", "rm", "ppo", "dpo", "kto")
OUR_STAGES = ("grpo",)  # athanor's own, next to LLaMA-Factory's
_STAGE_REFUSALS = {
    "ppo": "stage: ppo needs a reward model and online generation, which athanor does not implement; use stage: dpo",
}


def _optim_problem(optim: Any) -> str | None:
    """transformers' bitsandbytes optimizers (adamw_bnb_8bit, paged_adamw_8bit, lion_8bit...) need CUDA."""
    if isinstance(optim, str) and any(w in optim for w in ("8bit", "paged", "bnb")):
        return f"optim: {optim} needs bitsandbytes and a CUDA GPU; use adamw_torch on this machine"
    return None


def _stage_problem(stage: Any) -> str | None:
    if stage not in LF_STAGES + OUR_STAGES:
        return (f"stage: unknown stage {stage!r}; LLaMA-Factory's stages are {', '.join(LF_STAGES)} (athanor adds "
                f"{', '.join(OUR_STAGES)})")
    return _STAGE_REFUSALS.get(stage)


def _parse_overrides(overrides: list[str], problems: list[str]) -> dict[str, Any]:
    from athanor.keyvalue import split_pair, yaml_value

    out: dict[str, Any] = {}
    for item in overrides:
        try:
            key, value = split_pair(item, "override")
        except ValueError:
            problems.append(f"override {item!r}: expected key=value")  # listed with the config's other problems
            continue
        out[key] = yaml_value(value)  # "8" -> 8, "true" -> True, as in the YAML file
    return out


def _validate(raw: dict[str, Any], problems: list[str]) -> TrainConfig | None:
    """Unknown keys and type errors go to `problems`; returns the config when it could be built at all."""
    known = {k: v for k, v in raw.items() if k in TrainConfig.model_fields}
    for key in raw:
        if key not in TrainConfig.model_fields:
            problems.append(_unknown_key(str(key)))
    try:
        return TrainConfig.model_validate(known)
    except ValidationError as e:
        bad = set()
        for err in e.errors():
            key = ".".join(str(p) for p in err["loc"]) or "config"
            bad.add(err["loc"][0] if err["loc"] else None)
            got = f" (got {err['input']!r})" if err["type"] != "missing" else ""
            problems.append(f"{key}: {err['msg']}{got}")
    # Build it without the bad keys so combinations of the good ones are still checked in the same pass.
    try:
        return TrainConfig.model_validate({k: v for k, v in known.items() if k not in bad})
    except ValidationError:
        return None


def _unknown_key(key: str) -> str:
    from athanor.train.lf_keys import LF_KEYS

    close = difflib.get_close_matches(key, [*FIELD_NAMES, *LF_KEYS], n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown key {key!r}{hint}"


def _detect_cuda() -> bool:
    import torch

    return torch.cuda.is_available()
