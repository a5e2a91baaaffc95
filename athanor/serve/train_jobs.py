"""OpenAI's fine-tuning API over `athanor train`: a FastAPI `router` for `athanor serve` to include.

    POST /v1/fine_tuning/jobs               {model, training_file, hyperparameters, suffix, config | yaml}
    GET  /v1/fine_tuning/jobs               {"object": "list", "data": [job, ...], "has_more"} (newest first)
    GET  /v1/fine_tuning/jobs/{id}          one job
    GET  /v1/fine_tuning/jobs/{id}/events   its events, newest first (`after`, `limit`); loss steps carry
                                            data {step, total_steps, loss, learning_rate}
    POST /v1/fine_tuning/jobs/{id}/cancel   stop a queued or running job

The LLaMA-Factory keys come from `config` (a mapping) or `yaml` (its text); OpenAI's fields, when given, set the
keys they stand for: model -> model_name_or_path, training_file -> dataset (a path on the server or a dataset_info.json name),
n_epochs -> num_train_epochs, batch_size -> per_device_train_batch_size, learning_rate_multiplier x the learning
rate. Relative dataset paths resolve against `dataset_dir`, else the server's working directory; what the run
writes stays in $ATHANOR_HOME/jobs/ID (output_dir is always the job's, tokenized_path must be relative). The config is
checked before anything is queued (400 with the checker's problems on one line). A job that succeeds is added
to the model store as `ft-SUFFIX-XXXXXX` (its base with the trained adapter), which is `fine_tuned_model`.

Not for: running jobs (train/jobs.py) or the console page (ui/ops_pages.py).
"""

from __future__ import annotations

import atexit
import threading
from pathlib import Path
from typing import Any

import yaml
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from athanor.errors import AthanorError
from athanor.home import athanor_home
from athanor.serve.errors import ServeError
from athanor.train.config import ConfigError
from athanor.train.jobs import Job, JobManager, job_events

router = APIRouter(prefix="/v1/fine_tuning", tags=["fine-tuning"])
_manager_lock = threading.Lock()


class Hyperparameters(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n_epochs: int | float | str | None = Field(None, description="passes over the data, or 'auto'")
    batch_size: int | str | None = Field(None, description="rows per step, or 'auto'")
    learning_rate_multiplier: float | str | None = Field(None, description="x the config's learning rate, or 'auto'")


class CreateJob(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str | None = Field(None, description="base model: store name, HF dir or GGUF (model_name_or_path)")
    training_file: str | None = Field(None, description="dataset path on the server or a dataset_info.json name")
    validation_file: str | None = Field(None, description="eval dataset (eval_dataset)")
    hyperparameters: Hyperparameters | None = None
    suffix: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9._-]*$")
    seed: int | None = None
    config: dict[str, Any] | None = Field(None, description="LLaMA-Factory keys")
    yaml: str | None = Field(None, description="a LLaMA-Factory training YAML, as text")


def manager(request: Request) -> JobManager:
    """The app's job manager, made on first use under $ATHANOR_HOME/jobs (tests may set app.state.train_jobs)."""
    state = request.app.state
    with _manager_lock:
        if getattr(state, "train_jobs", None) is None:
            store = getattr(getattr(state, "manager", None), "store", None)
            state.train_jobs = JobManager(athanor_home() / "jobs", on_success=lambda job: register_model(store, job))
            atexit.register(state.train_jobs.shutdown)  # a stopping server takes its training children with it
        return state.train_jobs


@router.post("/jobs")
def create_job(body: CreateJob, request: Request) -> dict:
    config, extra = job_config(body)
    try:
        job = manager(request).create(config, **extra)
    except ConfigError as e:
        raise ServeError(" ; ".join(e.problems), 400, "config", "invalid_config") from None
    except AthanorError as e:
        raise ServeError(" ".join(str(e).split()), 400, "config", "invalid_config") from None
    return job_json(job)


@router.get("/jobs")
def list_jobs(request: Request, after: str | None = None, limit: int = 20) -> dict:
    jobs = manager(request).list()
    if after:
        ids = [j.id for j in jobs]
        jobs = jobs[ids.index(after) + 1:] if after in ids else []
    limit = max(1, min(limit, 1000))
    return {"object": "list", "data": [job_json(j) for j in jobs[:limit]], "has_more": len(jobs) > limit}


@router.get("/jobs/{job_id}")
def get_job(job_id: str, request: Request) -> dict:
    return job_json(_job(request, job_id))


@router.get("/jobs/{job_id}/events")
def list_events(job_id: str, request: Request, after: str | None = None, limit: int = 20) -> dict:
    events = job_events(_job(request, job_id))[::-1]  # newest first, as OpenAI lists them
    if after:
        ids = [e["id"] for e in events]
        events = events[ids.index(after) + 1:] if after in ids else []
    limit = max(1, min(limit, 10000))
    return {"object": "list", "data": events[:limit], "has_more": len(events) > limit}


@router.post("/jobs/{job_id}/cancel")
def cancel_job(job_id: str, request: Request) -> dict:
    _job(request, job_id)
    try:
        return job_json(manager(request).cancel(job_id))
    except ValueError as e:
        raise ServeError(str(e), 400, "job_id", "job_not_active") from None


def _job(request: Request, job_id: str) -> Job:
    try:
        return manager(request).get(job_id)
    except KeyError:
        raise ServeError(f"fine-tuning job {job_id[:100]!r} not found", 404, "job_id", "job_not_found") from None


# ---- shapes


def job_config(body: CreateJob) -> tuple[dict[str, Any], dict[str, Any]]:
    """(LLaMA-Factory keys to run, the OpenAI fields kept on the job) from a request body."""
    if body.config is not None and body.yaml is not None:
        raise ServeError("give either config or yaml, not both", 400, "yaml")
    config = dict(body.config or {}) if body.yaml is None else _parse_yaml(body.yaml)
    if body.model:
        config["model_name_or_path"] = body.model
    if body.training_file:
        config["dataset"] = body.training_file
    if body.validation_file:
        config["eval_dataset"] = body.validation_file
    if body.seed is not None:
        config["seed"] = body.seed
    hp = body.hyperparameters or Hyperparameters()
    for key, value in (("num_train_epochs", hp.n_epochs), ("per_device_train_batch_size", hp.batch_size)):
        if value is not None and value != "auto":
            config[key] = value
    if hp.learning_rate_multiplier not in (None, "auto"):
        try:
            config["learning_rate"] = float(config.get("learning_rate", 1e-4)) * float(hp.learning_rate_multiplier)
        except (TypeError, ValueError):
            raise ServeError("learning_rate_multiplier: expected a number or 'auto' (and a numeric learning_rate)",
                             400, "hyperparameters.learning_rate_multiplier") from None
    if "model_name_or_path" not in config:
        raise ServeError("model: give the base model (or model_name_or_path in config/yaml)", 400, "model")
    config.setdefault("dataset_dir", str(Path.cwd()))
    tokenized = config.get("tokenized_path")
    if tokenized is not None and (not isinstance(tokenized, str) or Path(tokenized).is_absolute() or ".." in tokenized):
        raise ServeError("tokenized_path: over HTTP it must be a relative folder (it is kept in the job's folder)",
                         400, "tokenized_path")
    if config.get("reward_funcs"):  # Python code named by the request: it would run in this server's process
        raise ServeError("reward_funcs: GRPO reward functions are Python code and are not accepted over HTTP; run "
                         "`athanor train` on the machine", 400, "reward_funcs")
    kept = {"training_file": body.training_file, "suffix": body.suffix,
            "hyperparameters": hp.model_dump(exclude_none=True)}
    return config, kept


def _parse_yaml(text: str) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ServeError(" ".join(f"yaml is not valid YAML: {e}".split()), 400, "yaml") from None
    if not isinstance(raw, dict):
        raise ServeError(f"yaml: expected a mapping of key: value, got {type(raw).__name__}", 400, "yaml")
    return raw


def job_json(job: Job) -> dict[str, Any]:
    """A job in OpenAI's shape, plus `config` (what runs), `output_dir` and `final_loss` for the console."""
    from athanor.train.jobs import losses

    steps = losses(job)
    hp = {"n_epochs": job.config.get("num_train_epochs", "auto"),
          "batch_size": job.config.get("per_device_train_batch_size", "auto"),
          "learning_rate_multiplier": job.hyperparameters.get("learning_rate_multiplier", "auto")}
    error = {"code": "training_failed", "message": job.error, "param": None} if job.error else None
    return {"object": "fine_tuning.job", "id": job.id, "model": job.model, "created_at": job.created_at,
            "finished_at": job.finished_at, "fine_tuned_model": job.fine_tuned_model, "organization_id": "athanor",
            "result_files": [], "status": job.status, "validation_file": job.config.get("eval_dataset"),
            "training_file": job.training_file or _dataset_text(job.config.get("dataset")), "hyperparameters": hp,
            "trained_tokens": None, "error": error, "seed": job.config.get("seed", 42), "suffix": job.suffix,
            "estimated_finish": None, "integrations": [], "method": _method(job),
            "config": job.config, "output_dir": job.config["output_dir"],
            "final_loss": steps[-1]["loss"] if steps else None,
            "step": steps[-1]["step"] if steps else 0, "total_steps": steps[-1].get("max_steps") if steps else None}


def _dataset_text(dataset: Any) -> str | None:
    return ",".join(dataset) if isinstance(dataset, list) else dataset


def _method(job: Job) -> dict[str, Any]:
    kind = "dpo" if job.config.get("stage") == "dpo" else "supervised"
    return {"type": kind, kind: {"hyperparameters": {}}}


def register_model(store, job: Job) -> str | None:
    """Add the trained model to the store as `ft-SUFFIX-XXXXXX`: the base with the adapter (or the full model)."""
    if store is None:
        return None
    out = Path(job.config["output_dir"])
    if (out / "adapter_config.json").is_file():
        text = f"FROM {job.config['model_name_or_path']}\nADAPTER {out}\n"
    elif (out / "config.json").is_file():
        text = f"FROM {out}\n"
    else:
        return None
    modelfile = job.folder / "Modelfile"
    modelfile.write_text(text, encoding="utf-8")
    name = f"ft-{job.suffix or 'job'}-{job.id[-6:]}".lower()
    store.create(name, modelfile)
    return name
