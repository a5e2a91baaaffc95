"""The Traces, Training and Evals pages of the console (console part B builds them here).

Until then each renders a placeholder saying so. Routes are relative to /ui (routes.py includes this router).
Not for the shell (routes.py) or the data routes (the /v1 API, ui/api.py).
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from athanor.serve.ui.routes import render

router = APIRouter()


@router.get("/traces")
def traces(request: Request):
    return render(request, "placeholder.html", "traces", title="Traces")


@router.get("/training")
def training(request: Request):
    return render(request, "placeholder.html", "training", title="Training")


@router.get("/evals")
def evals(request: Request):
    return render(request, "placeholder.html", "evals", title="Evals")
