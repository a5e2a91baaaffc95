"""The Traces, Training and Evals pages of the console: routes relative to /ui (routes.py includes this router).

    /ui/traces            filterable trace list; select -> export SFT/DPO JSONL
    /ui/traces/{id}       one trace: span tree on a timeline, inputs/outputs, thumbs up/down, correction
    /ui/training          start a run (form or LLaMA-Factory YAML), live loss curve, stop; past runs
    /ui/evals             eval runs with accuracy and 95% CI; ?a=RUN&b=RUN opens the compare view

Like every console page they hold no data: the page scripts (static/traces.js, training.js, evals.js) read and
write through the API with the key: /v1/traces, /v1/feedback, /v1/traces/export, /v1/fine_tuning/jobs,
/v1/evals. Not for those API routes themselves (serve/trace_routes.py, dataset_routes.py, train_jobs.py, eval_routes.py).
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from athanor.serve.ui.routes import render

router = APIRouter()


@router.get("/traces")
def traces(request: Request):
    return render(request, "traces.html", "traces")


@router.get("/traces/{trace_id}")
def trace(request: Request, trace_id: str):
    return render(request, "trace.html", "traces", trace_id=trace_id)


@router.get("/training")
def training(request: Request):
    return render(request, "training.html", "training")


@router.get("/evals")
def evals(request: Request):
    return render(request, "evals.html", "evals", can_promote=True)  # POST /v1/promote (serve/eval_routes.py)
