"""The console's shell: `router` serves the pages under /ui, their vendored static files, and the nav.

A page is server-rendered Jinja2 (templates/, extending base.html) that holds no data: its HTML is served
without the API key (middleware.py lets /ui through, but never /ui/api/), and every data call the page makes
goes through the API routes with `Authorization: Bearer KEY` (the key is entered once and kept in the browser's
localStorage; static/console.js adds it to fetch and htmx requests). Same-origin requests pass guards.py.

For other page modules (ops_pages.py): `NAV` is the nav bar, `render(request, template, page, **context)`
renders a page inside base.html. Not for data routes (ui/api.py) or the API itself.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

UI_DIR = Path(__file__).parent
STATIC_DIR = UI_DIR / "static"
# (page id, label, path): the nav bar, in order; page modules pass their page id to render()
NAV: list[tuple[str, str, str]] = [
    ("chat", "Chat", "/ui/chat"),
    ("traces", "Traces", "/ui/traces"),
    ("training", "Training", "/ui/training"),
    ("evals", "Evals", "/ui/evals"),
    ("models", "Models", "/ui/models"),
    ("workflows", "Workflows", "/ui/workflows"),
    ("knowledge", "Knowledge", "/ui/knowledge"),
]

# pages run only their own files: no inline or foreign script, no framing (the key sits in this origin's storage).
# 'unsafe-eval' lets the browser tests' Playwright waits run under this very policy; no console code evaluates
# strings, and htmx's evaluating features are off (console.js: htmx.config.allowEval = false).
CSP = ("default-src 'self'; script-src 'self' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")

router = APIRouter(prefix="/ui", include_in_schema=False)
_templates = None


def templates():
    """The one Jinja2 environment of the console (autoescaping on), built on first use."""
    global _templates
    if _templates is None:
        from fastapi.templating import Jinja2Templates

        _templates = Jinja2Templates(directory=str(UI_DIR / "templates"))
    return _templates


def render(request: Request, template: str, page: str, **context) -> HTMLResponse:
    """A page inside base.html: `page` picks the highlighted nav entry; `auth_required` tells the page to ask
    for the key (the app sets `state.auth_required` when it has one)."""
    context |= {"page": page, "nav": NAV, "auth_required": bool(getattr(request.app.state, "auth_required", False))}
    response = templates().TemplateResponse(request, template, context)
    response.headers.update({"Cache-Control": "no-store", "Content-Security-Policy": CSP,
                             "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin"})
    return response


@router.get("")
@router.get("/")
def index():
    return RedirectResponse("/ui/chat", status_code=307)


@router.get("/static/{path:path}")
def static(path: str):
    """A vendored or own asset; anything outside static/ (`..`, absolute paths) is a 404."""
    target = (STATIC_DIR / path).resolve()
    if not target.is_relative_to(STATIC_DIR.resolve()) or not target.is_file():
        return Response("not found", status_code=404, media_type="text/plain")
    media = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    return FileResponse(target, media_type=media, headers={"Cache-Control": "public, max-age=3600"})


def _page(name: str):
    def page(request: Request):
        return render(request, f"{name}.html", name)

    page.__name__ = name
    return page


for _name in ("chat", "models", "workflows", "knowledge"):  # the pages whose data all comes from the API
    router.add_api_route(f"/{_name}", _page(_name), methods=["GET"])


def _include_page_modules() -> None:
    from athanor.serve.ui import api, ops_pages

    router.include_router(ops_pages.router)  # Traces, Training, Evals (console part B)
    router.include_router(api.router)  # /ui/api/...: the console's own JSON/fragments, behind the key


_include_page_modules()
