"""`do_predict` with `predict_with_generate` (stage: sft): generate a reply for each eval_dataset sample and score it.

For: `run_predict(cfg, model, tokenizer)`, LLaMA-Factory's predict step. Each sample's prompt (every turn before its
last reply, rendered with the training template and its generation prompt) goes through transformers' `generate`
with LF's generating keys (do_sample, temperature, top_p, top_k, num_beams, max_new_tokens or max_length,
repetition_penalty, length_penalty), stopping at the template's stop tokens. Writes, as LF does:
`generated_predictions.jsonl` (one {"prompt", "predict", "label"} per line: the prompt decoded with its special
tokens, predict and label decoded with skip_special_tokens) and `predict_results.json` (predict_bleu-4,
predict_rouge-1/2/l from predict_metrics.py, plus runtime and sample counts).

Not for: serving (athanor's engine) or eval loss (the trainer's do_eval).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from athanor.errors import AthanorError
from athanor.text.tokenizer import Tokenizer
from athanor.train.config import TrainConfig
from athanor.train.prompt_reply import infer_seqlen, split_last_reply
from athanor.train.sft import with_system

PREDICTIONS_FILE = "generated_predictions.jsonl"
RESULTS_FILE = "predict_results.json"


def prediction_prompts(cfg: TrainConfig, tokenizer: Tokenizer, echo: Callable[[str], None] = print
                       ) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, label ids) per eval_dataset sample: the turns before the last reply, and that reply's tokens."""
    from athanor.data.formats import Conversation
    from athanor.data.registry import load_datasets

    samples, reports = load_datasets(cfg.eval_dataset, cfg.dataset_dir, cfg.max_samples)
    for report in reports:
        echo(f"dataset {report.summary()}")
    out = []
    for s in samples:
        assert isinstance(s, Conversation), "config checks keep preference data out of sft"
        prompt, label = split_last_reply(tokenizer, with_system(s.messages, cfg.default_system), s.tools)
        if not label:
            continue
        source_len, target_len = infer_seqlen(len(prompt), len(label), cfg.cutoff_len)  # as LF cuts them
        out.append((prompt[:source_len], label[:target_len]))
    if not out:
        raise AthanorError("do_predict: no eval_dataset sample ends with an assistant reply to compare with")
    return out


def generation_kwargs(cfg: TrainConfig, tokenizer: Tokenizer) -> dict[str, Any]:
    """LF's GeneratingArguments.to_dict(): max_new_tokens when above 0, else max_length; stop at every stop token."""
    kwargs: dict[str, Any] = {
        "do_sample": cfg.do_sample and cfg.temperature > 0, "num_beams": cfg.num_beams,
        "repetition_penalty": cfg.repetition_penalty, "length_penalty": cfg.length_penalty,
        "eos_token_id": sorted(tokenizer.stop_token_ids | ({tokenizer.eos_token_id} - {None})),
        "pad_token_id": tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0, "use_cache": True,
    }
    if kwargs["do_sample"]:
        kwargs.update(temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k)
    if cfg.max_new_tokens > 0:
        kwargs["max_new_tokens"] = cfg.max_new_tokens
    else:
        kwargs["max_length"] = cfg.max_length
    return kwargs


def run_predict(cfg: TrainConfig, model: Any, tokenizer: Tokenizer, echo: Callable[[str], None] = print
                ) -> dict[str, float]:
    """Generate, write generated_predictions.jsonl and predict_results.json in output_dir; returns the metrics."""
    from athanor.train.predict_metrics import mean_scores, quiet_jieba

    prompts = prediction_prompts(cfg, tokenizer, echo)
    kwargs = generation_kwargs(cfg, tokenizer)
    _plain_attention(model)
    model.eval()
    torch.manual_seed(cfg.seed)
    device = next(model.parameters()).device
    start = time.perf_counter()
    rows, scored = [], []
    with torch.no_grad():
        for prompt, label in prompts:
            ids = torch.tensor([prompt], device=device)
            generated = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs)
            reply = generated[0, len(prompt):].tolist()
            rows.append({"prompt": _decode(tokenizer, prompt, False),
                         "predict": _decode(tokenizer, reply, cfg.skip_special_tokens),
                         "label": _decode(tokenizer, label, cfg.skip_special_tokens)})
            scored.append((_decode(tokenizer, reply, True), _decode(tokenizer, label, True)))  # LF scores these
    runtime = time.perf_counter() - start
    quiet_jieba()
    metrics = {f"predict_{k}": v for k, v in mean_scores(scored).items()}
    metrics.update(predict_runtime=round(runtime, 4), predict_samples_per_second=round(len(rows) / runtime, 3),
                   predict_steps_per_second=round(len(rows) / runtime, 3))
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / PREDICTIONS_FILE, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    (out / RESULTS_FILE).write_text(json.dumps(metrics, indent=4, sort_keys=True) + "\n", encoding="utf-8")
    echo(f"predict: {len(rows)} samples; " + ", ".join(f"{k} {metrics[f'predict_{k}']:.2f}"
                                                      for k in ("bleu-4", "rouge-1", "rouge-2", "rouge-l")))
    echo(f"predictions in {out / PREDICTIONS_FILE}, scores in {out / RESULTS_FILE}")
    return metrics


def _decode(tokenizer: Tokenizer, ids: list[int], skip_special_tokens: bool) -> str:
    return tokenizer.backend.decode(ids, skip_special_tokens=skip_special_tokens)


def predict_only(cfg: TrainConfig, echo: Callable[[str], None] = print) -> Path:
    """do_train: false: load the model (and adapter_name_or_path) as it is and predict."""
    from athanor.train.sft import base_and_tokenizer, load_model, save_side_files

    base, gguf, tokenizer = base_and_tokenizer(cfg)
    prediction_prompts(cfg, tokenizer, lambda _: None)  # data problems surface before the model loads
    model = load_model(cfg, base, gguf)
    run_predict(cfg, model, tokenizer, echo)
    out = Path(cfg.output_dir)
    save_side_files(cfg, base, tokenizer, out)
    return out


def _plain_attention(model: Any) -> None:
    """Training may have switched attention to packed_attention.py's (no KV cache); generation needs sdpa."""
    from athanor.train.packed_attention import NAME

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(base.config, "_attn_implementation", None) == NAME:
        base.set_attn_implementation("sdpa")
