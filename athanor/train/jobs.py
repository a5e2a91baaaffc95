"""Training jobs: `athanor train` runs in child processes, one at a time, each in its own folder, watched by a thread.

For: `JobManager(root)`, which checks a job's config up front (the same `load_config` as `athanor train`), writes
`root/ID/config.yaml`, queues the job, starts `python -m athanor.cli train config.yaml` in a new process group
(output in `root/ID/train.log`, the model in `root/ID/output`), follows it to the end, and cancels it by killing
the group. A job's state lives in `root/ID/job.json`, so past runs survive a restart; its loss curve is the run's
own `output/trainer_log.jsonl` (callbacks.py writes it). `job_events(job)` turns both into dated events.

Not for: HTTP shapes (serve/train_jobs.py) or training itself (run.py and the recipes, in the child process).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from athanor.errors import AthanorError
from athanor.train.config import ConfigError, load_config

ACTIVE = ("validating_files", "queued", "running")
LOG_FILE = "trainer_log.jsonl"  # what callbacks.JsonlLogCallback writes (that module imports transformers)
KILL_GRACE_S = 5.0  # SIGTERM first; a child still alive after this gets SIGKILL


@dataclass
class Job:
    """One training job, as stored in job.json (OpenAI's fine-tuning job fields plus ours)."""

    id: str
    model: str
    config: dict[str, Any]  # the LLaMA-Factory keys the child runs (output_dir is the job's)
    training_file: str | None = None
    suffix: str | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    status: str = "queued"
    created_at: int = 0
    started_at: int | None = None
    finished_at: int | None = None
    fine_tuned_model: str | None = None
    error: str | None = None
    pid: int | None = None
    returncode: int | None = None

    @property
    def folder(self) -> Path:
        return Path(self.config["output_dir"]).parent

    @property
    def log_path(self) -> Path:
        return Path(self.config["output_dir"]) / LOG_FILE


def losses(job: Job) -> list[dict[str, Any]]:
    """The run's logged steps that carry a training loss, in order (a resumed step overwrites the earlier one)."""
    if not job.log_path.is_file():
        return []
    rows: dict[int, dict[str, Any]] = {}
    mtime = int(job.log_path.stat().st_mtime)
    for line in job.log_path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # the child may be half-way through writing the last line
        if isinstance(row, dict) and "loss" in row and "step" in row:
            start = job.started_at or job.created_at
            row["created_at"] = min(mtime, start + int(row.get("elapsed_s", 0)))
            rows[int(row["step"])] = row
    return [rows[s] for s in sorted(rows)]


class JobManager:
    """Queue and run training jobs under `root`; `max_running` at once (1 by default, the rest wait)."""

    def __init__(self, root: Path, max_running: int = 1, python: str = sys.executable,
                 on_success: Callable[[Job], str | None] | None = None) -> None:
        self.root, self.max_running, self.python, self.on_success = Path(root), max_running, python, on_success
        self.jobs: dict[str, Job] = {}
        self._procs: dict[str, subprocess.Popen] = {}
        self._cancelled: set[str] = set()
        self._lock = threading.RLock()
        self._load()

    # ---- public

    def create(self, config: dict[str, Any], *, training_file: str | None = None, suffix: str | None = None,
               hyperparameters: dict[str, Any] | None = None) -> Job:
        """Check `config` as `athanor train` would (ConfigError on any problem), then queue it."""
        job_id = "ftjob-" + secrets.token_hex(12)
        folder = self.root / job_id
        config = {**config, "output_dir": str(folder / "output")}
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "config.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        try:
            load_config(path)
        except (ConfigError, AthanorError):
            _remove_tree(folder)
            raise
        job = Job(job_id, str(config["model_name_or_path"]), config, training_file, suffix,
                  dict(hyperparameters or {}), "queued", int(time.time()))
        with self._lock:
            self.jobs[job_id] = job
            self._save(job)
            self._start_queued()
        return job

    def get(self, job_id: str) -> Job:
        with self._lock:
            if job_id not in self.jobs:
                raise KeyError(job_id)
            return self.jobs[job_id]

    def list(self) -> list[Job]:
        with self._lock:
            return sorted(self.jobs.values(), key=lambda j: (j.created_at, j.id), reverse=True)

    def cancel(self, job_id: str) -> Job:
        """Stop a queued or running job (its whole process group); ValueError when it already ended."""
        with self._lock:
            job = self.get(job_id)
            if job.status not in ACTIVE:
                raise ValueError(f"job {job_id} has already {job.status}; only a queued or running job can be cancelled")
            self._cancelled.add(job_id)
            proc = self._procs.get(job_id)
            if proc is None:  # still queued: it never started
                self._finish(job, "cancelled", None)
                return job
        _kill_group(proc)
        proc.wait()  # the watcher thread records the end; wait so the answer already says cancelled
        with self._lock:
            if job.status in ACTIVE:
                self._finish(job, "cancelled", proc.returncode)
        return job

    def shutdown(self) -> None:
        """Cancel every running job (a server stopping takes its children with it)."""
        for job in self.list():
            if job.status in ACTIVE:
                try:
                    self.cancel(job.id)
                except ValueError:
                    pass

    # ---- running

    def _start_queued(self) -> None:
        running = sum(1 for j in self.jobs.values() if j.status == "running")
        for job in sorted(self.jobs.values(), key=lambda j: j.created_at):
            if running >= self.max_running:
                return
            if job.status == "queued":
                self._spawn(job)
                running += 1

    def _spawn(self, job: Job) -> None:
        cmd = [self.python, "-m", "athanor.cli", "train", str(job.folder / "config.yaml")]
        with open(job.folder / "train.log", "ab") as log:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=job.folder, env=_child_env(),  # relative paths it writes stay in the job
                                    start_new_session=True)  # its own group: cancel kills dataloader workers too
        job.status, job.started_at, job.pid = "running", int(time.time()), proc.pid
        self._procs[job.id] = proc
        self._save(job)
        threading.Thread(target=self._watch, args=(job, proc), name=f"train-{job.id}", daemon=True).start()

    def _watch(self, job: Job, proc: subprocess.Popen) -> None:
        code = proc.wait()
        name = None
        if code == 0 and job.id not in self._cancelled and self.on_success is not None:
            try:
                name = self.on_success(job)
            except Exception as e:  # noqa: BLE001 -- the run succeeded; only registering its model failed: say so, keep the files
                job.error = f"trained, but registering the model failed: {e}"
        with self._lock:
            if job.status not in ACTIVE:
                return
            if job.id in self._cancelled:
                self._finish(job, "cancelled", code)
            elif code == 0:
                job.fine_tuned_model = name or str(Path(job.config["output_dir"]))
                self._finish(job, "succeeded", code)
            else:
                job.error = _last_error_line(job.folder / "train.log") or f"training exited with code {code}"
                self._finish(job, "failed", code)

    def _finish(self, job: Job, status: str, code: int | None) -> None:
        job.status, job.finished_at, job.returncode = status, int(time.time()), code
        self._procs.pop(job.id, None)
        self._save(job)
        self._start_queued()

    # ---- persistence

    def _save(self, job: Job) -> None:
        path = job.folder / "job.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(job), indent=1), encoding="utf-8")
        os.replace(tmp, path)

    def _load(self) -> None:
        """Jobs of earlier server runs: queued ones wait again; a running one has lost its process: failed."""
        if not self.root.is_dir():
            return
        for path in sorted(self.root.glob("*/job.json")):
            try:
                job = Job(**json.loads(path.read_text(encoding="utf-8")))
            except (ValueError, TypeError):
                continue  # a half-written or foreign file is not a job
            if job.status in ACTIVE and job.status != "queued":
                job.status, job.error = "failed", "the server stopped before the job finished"
                job.finished_at = job.finished_at or int(time.time())
                self._save(job)
            self.jobs[job.id] = job
        with self._lock:
            self._start_queued()


def job_events(job: Job) -> list[dict[str, Any]]:
    """The job's events, oldest first: created, started, one per logged step (loss), and how it ended."""
    events = [_event(job, 0, job.created_at, f"Created fine-tuning job: {job.id}", "message")]
    if job.started_at:
        events.append(_event(job, 1, job.started_at, "Fine-tuning job started", "message"))
    for row in losses(job):
        total = row.get("max_steps")
        data = {"step": row["step"], "total_steps": total, "loss": row["loss"],
                "learning_rate": row.get("learning_rate"), "epoch": row.get("epoch"),
                "tokens_per_s": row.get("tokens_per_s")}
        steps = f"{row['step']}/{total}" if total else str(row["step"])
        events.append(_event(job, 2 + int(row["step"]), row["created_at"],
                             f"Step {steps}: training loss={row['loss']:.4f}", "metrics", data))
    if job.finished_at and job.status not in ACTIVE:
        message = {"succeeded": "The job has successfully completed", "cancelled": "The job was cancelled",
                   "failed": f"The job failed: {job.error}"}[job.status]
        events.append(_event(job, 10**9, job.finished_at, message, "message",
                             level="error" if job.status == "failed" else "info"))
    return events


def _event(job: Job, n: int, created_at: int, message: str, kind: str, data: dict | None = None,
           level: str = "info") -> dict[str, Any]:
    return {"object": "fine_tuning.job.event", "id": f"ftevent-{job.id[6:]}-{n}", "created_at": int(created_at),
            "level": level, "message": message, "data": data or {}, "type": kind}


def _child_env() -> dict[str, str]:
    """This process's environment, with the folder this athanor package comes from first on PYTHONPATH (the child
    runs in the job's folder, so a checkout that is not installed must still be found)."""
    import athanor

    root = str(Path(athanor.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([root, *(p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p)])
    return env


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=KILL_GRACE_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _last_error_line(log: Path) -> str | None:
    """The child's last meaningful line (the one-line error `athanor train` prints, or a traceback's last)."""
    if not log.is_file():
        return None
    lines = [ln.strip() for ln in log.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    if not lines:
        return None
    start = len(lines) - 1
    while start > 0 and lines[start].startswith("- "):  # a config error: "N problems in X:" then one per line
        start -= 1
    return " ".join(lines[start:])[:1000]


def _remove_tree(folder: Path) -> None:
    for p in sorted(folder.rglob("*"), reverse=True):
        p.rmdir() if p.is_dir() else p.unlink()
    folder.rmdir()
