"""Checks of LLaMA-Factory's label, streaming and predict keys, with LF's own rules and reasons.

For: `data_key_problems` (mask_history, train_on_prompt, streaming) and `predict_problems` (do_train, do_predict,
predict_with_generate), called by config.check_combinations; one problem line each, quoting LF's message where LF
refuses the same combination (hparams/data_args.py and parser.py).

Not for: what the keys do (encode.py labels, streaming.py, predict.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from athanor.train.config import TrainConfig


def data_key_problems(cfg: TrainConfig) -> list[str]:
    out = []
    if (cfg.train_on_prompt or cfg.mask_history) and cfg.stage != "sft":
        out.append(f"train_on_prompt/mask_history: they apply to stage: sft only (got {cfg.stage}); LLaMA-Factory: "
                   "\"`train_on_prompt` or `mask_history` cannot be set as True except SFT.\"")
    if cfg.mask_history and cfg.train_on_prompt:
        out.append("mask_history and train_on_prompt are both true; LLaMA-Factory: \"`mask_history` is incompatible "
                   "with `train_on_prompt`.\"")
    if cfg.streaming:
        out += _streaming_problems(cfg)
    return out


def _streaming_problems(cfg: TrainConfig) -> list[str]:
    out = []
    if cfg.max_steps == -1:
        out.append("streaming: true needs max_steps (a stream has no length to count epochs in); LLaMA-Factory: "
                   "\"Please specify `max_steps` in streaming mode.\"")
    if cfg.max_samples is not None:
        out.append("streaming and max_samples are both set; LLaMA-Factory: \"`max_samples` is incompatible with "
                   "`streaming`.\"")
    if 0 < cfg.val_size < 1:
        out.append(f"val_size: {cfg.val_size} is a share, which a stream cannot take; LLaMA-Factory: \"Streaming "
                   "mode should have an integer val size.\"")
    if cfg.stage != "sft":
        out.append(f"streaming: supported for stage: sft here (got {cfg.stage}); its datasets are read whole")
    if cfg.packing:
        out.append("streaming with packing is not supported here (packing sorts the whole dataset by length)")
    if cfg.tokenized_path:
        out.append("streaming with tokenized_path is not supported here (a stream is tokenized as it is read)")
    return out


def predict_problems(cfg: TrainConfig) -> list[str]:
    out = []
    if not cfg.do_train and not cfg.do_predict:
        out.append("do_train: false needs do_predict: true; athanor train trains, or predicts with the model as it is")
    if (cfg.do_eval or cfg.do_predict) and not cfg.eval_dataset and cfg.val_size < 1e-6:
        out.append(f"{'do_predict' if cfg.do_predict else 'do_eval'}: no eval data (set eval_dataset or val_size); "
                   "LLaMA-Factory: \"Please specify dataset for evaluation.\"")
    if cfg.predict_with_generate and cfg.stage != "sft":
        out.append(f"predict_with_generate: stage: sft only (got {cfg.stage}); LLaMA-Factory: \"`predict_with_generate` "
                   "cannot be set as True except SFT.\"")
    if cfg.do_predict and cfg.stage != "sft":
        out.append(f"do_predict: generating predictions applies to stage: sft (got {cfg.stage})")
    elif cfg.do_predict and not cfg.predict_with_generate:
        out.append("do_predict needs predict_with_generate: true; LLaMA-Factory: \"Please enable "
                   "`predict_with_generate` to save model predictions.\"")
    if cfg.predict_with_generate and not cfg.eval_dataset:
        out.append("predict_with_generate needs eval_dataset; LLaMA-Factory: \"Cannot use `predict_with_generate` "
                   "if `eval_dataset` is None.\"")
    return out
