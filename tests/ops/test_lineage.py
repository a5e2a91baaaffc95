"""Lineage end to end on a tiny model: traces -> exported dataset -> `athanor train` (LoRA, one step) -> export
--name -> the store manifest records base digest, config keys, dataset sha256 and the source trace ids; an eval
run of the model shows up; `athanor show --lineage` prints the chain and `--json` gives the same as data."""

from __future__ import annotations

import hashlib
import json

import yaml
from typer.testing import CliRunner

from athanor import tracing
from athanor.models.store import Store
from athanor.ops.datasets import export_traces, write_dataset
from athanor.ops.lineage import model_lineage
from athanor.ops.tracing_setup import TraceSettings, start_tracing
from athanor.train.lineage import sha256_of


def _traces(tmp_path) -> tuple[list[str], list[dict]]:
    t = start_tracing(TraceSettings(path=tmp_path / "traces.sqlite"))
    try:
        ids = []
        for q, a in (("hello world", "how are you?"), ("The capital of France", "is Paris.")):
            with tracing.span("POST /v1/chat/completions", "http") as root, \
                    tracing.span("chat base", "llm", **{tracing.REQUEST_MODEL: "base"}) as s:
                s.set_content(input=[{"role": "user", "content": q}], output=[{"role": "assistant", "content": a}])
            ids.append(root.trace_id)
        t.flush()
        for tid in ids:
            t.store.add_feedback(tid, 1.0)
        return ids, export_traces(t.store, "sft")
    finally:
        t.stop()


def test_trained_and_exported_model_records_where_it_came_from(tmp_path, tiny_hf_dir):
    from athanor.cli import app
    from athanor.ops.evals import run_eval
    from athanor.train.export import export_model
    from athanor.train.run import train

    store = Store()
    (tmp_path / "Modelfile").write_text(f"FROM {tiny_hf_dir}\n")
    store.create("base", tmp_path / "Modelfile")
    ids, records = _traces(tmp_path)
    data_file, _ = write_dataset(records * 4, tmp_path / "data" / "from_traces.jsonl", "sft")
    cfg = tmp_path / "sft.yaml"
    cfg.write_text(yaml.safe_dump({
        "model_name_or_path": "base", "stage": "sft", "finetuning_type": "lora", "lora_target": "all",
        "dataset": "from_traces", "dataset_dir": "data", "cutoff_len": 64, "output_dir": str(tmp_path / "out"),
        "per_device_train_batch_size": 2, "max_steps": 1, "save_steps": 100, "seed": 0}))
    out = train(cfg, echo=lambda _: None)

    made = json.loads((out / "lineage.json").read_text())
    assert made["kind"] == "train" and made["stage"] == "sft" and made["finetuning_type"] == "lora"
    assert made["base"]["name"] == "base" and made["base"]["digest"] == sha256_of(tiny_hf_dir)
    assert made["config"]["max_steps"] == 1 and "learning_rate" not in made["config"]  # the YAML's keys only
    (ds,) = made["datasets"]
    assert ds["files"][0]["sha256"] == "sha256:" + hashlib.sha256(
        data_file.name.encode() + b"\0" + data_file.read_bytes()).hexdigest()
    assert ds["trace_ids"] == ids  # each source trace once, though its record was repeated

    export_model("base", out, tmp_path / "merged", "hf", register_as="tuned")
    built = store.get("tuned").lineage["weights"]
    assert built["kind"] == "export" and built["base"]["digest"] == sha256_of(tiny_hf_dir)
    assert built["adapters"][0]["lineage"]["datasets"][0]["trace_ids"] == ids

    evals = tmp_path / "eval.jsonl"
    evals.write_text(json.dumps({"input": "hello world", "ideal": "x"}) + "\n")
    run = run_eval("tuned", evals, max_tokens=2)
    info = model_lineage("tuned", store)
    assert [r["run_id"] for r in info["evals"]] == [run["run_id"]]

    r = CliRunner().invoke(app, ["show", "tuned", "--lineage"])
    assert r.exit_code == 0, r.output
    assert "train stage=sft method=lora" in r.output and ids[0] in r.output and run["run_id"] in r.output
    assert "base base sha256:" in r.output
    r = CliRunner().invoke(app, ["show", "tuned", "--lineage", "--json"])
    assert json.loads(r.output)["built"]["weights"]["adapters"][0]["lineage"]["config"]["max_steps"] == 1
