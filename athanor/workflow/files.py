"""Files given to a workflow: uploads, allow-listed URLs and (from the CLI only) local paths.

A file value is Dify's file mapping — `{"transfer_method": "local_file", "upload_file_id": ID}` for a file sent
to `POST /v1/files/upload` first, or `{"transfer_method": "remote_url", "url": URL}` — or, when the run's
`Services.allow_local_files` is on (the CLI: the operator's own machine), a path or `{"path": ...}`. Over HTTP
that switch is off: a request never names a file on the server's disk, and the answer to one that tries does
not say whether the path exists. URLs are fetched only from `Services.file_url_hosts` (empty by default;
`--allow-host` on the CLI, `ATHANOR_WORKFLOW_FILE_HOSTS=a,b` for the server), without redirects. Uploads are stored by service_store.py (`$ATHANOR_HOME/workflows/uploads/`).

Not for: turning files into text (rag/loaders.py) or the node that does it (nodes/external.py).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from athanor.workflow.errors import WorkflowNodeError

MAX_FILE_BYTES = 15 * 2**20  # Dify's default upload limit, also the cap on a fetched remote_url


def _upload(file_id: str) -> tuple[Path, str]:
    """(data path, original name) of an upload (service_store.py); one message for a bad and a missing id."""
    from athanor.workflow.service_store import ServiceStore

    row = ServiceStore().upload(file_id[:64])
    if row is None or not Path(row["path"]).is_file():
        raise WorkflowNodeError(f"upload {file_id[:40]!r} not found (send the file to /v1/files/upload first)")
    return Path(row["path"]), row["name"]


def _in_uploads(value: Any, services) -> tuple[Path, str] | None:
    """A file value the service API resolved from an upload id: its `path` lies under the uploads folder."""
    root = getattr(services, "upload_root", None)
    if not (root and isinstance(value, dict) and value.get("path")):
        return None
    path = Path(str(value["path"])).resolve()
    if not path.is_relative_to(Path(root).resolve()) or not path.is_file():
        return None
    return path, str(value.get("filename") or path.name)


@contextlib.contextmanager
def local_copy(value: Any, services) -> Iterator[tuple[Path, str]]:
    """A readable path for one file value and the name whose suffix tells its format."""
    if isinstance(value, dict) and value.get("upload_file_id"):
        yield _upload(str(value["upload_file_id"]))
        return
    if (uploaded := _in_uploads(value, services)) is not None:
        yield uploaded
        return
    url = value.get("url") or value.get("remote_url") if isinstance(value, dict) else value
    if isinstance(url, str) and urlparse(url).scheme in ("http", "https"):
        with _fetched(url, services) as got:
            yield got
        return
    yield _local_path(value, services.allow_local_files)


def _local_path(value: Any, allowed: bool) -> tuple[Path, str]:
    if not allowed:
        raise WorkflowNodeError("document extractor: files must be uploads (upload_file_id) or http(s) URLs of "
                                "allowed hosts; server paths are not accepted here")
    if isinstance(value, dict):
        value = value.get("path") or value.get("local_path") or value.get("url")
    text = str(value or "").removeprefix("file://")
    if not text:
        raise WorkflowNodeError(f"document extractor: no file given ({str(value)[:80]!r})")
    path = Path(text).expanduser()
    if not path.is_file():
        raise WorkflowNodeError(f"document extractor: file {text!r} not found")
    return path, path.name


@contextlib.contextmanager
def _fetched(url: str, services) -> Iterator[tuple[Path, str]]:
    """Download an allow-listed URL (no redirects, size-capped) into a temporary file."""
    import httpx

    host = urlparse(url).hostname
    if host not in services.file_url_hosts:
        allowed = ", ".join(sorted(services.file_url_hosts)) or "none; the operator lists them"
        raise WorkflowNodeError(f"document extractor: files from host {host!r} are not allowed (allowed: {allowed})")
    name = os.path.basename(urlparse(url).path) or "download"
    with tempfile.TemporaryDirectory(prefix="athanor-file-") as tmp:
        path = Path(tmp) / "data"
        try:
            with httpx.stream("GET", url, timeout=30, follow_redirects=False, trust_env=False) as r, \
                    open(path, "wb") as f:
                if r.status_code != 200:
                    raise WorkflowNodeError(f"document extractor: {url} answered {r.status_code}")
                for chunk in r.iter_bytes():
                    if f.tell() + len(chunk) > MAX_FILE_BYTES:
                        raise WorkflowNodeError(f"document extractor: {url} is larger than "
                                                f"{MAX_FILE_BYTES // 2**20} MB")
                    f.write(chunk)
        except httpx.HTTPError as e:
            raise WorkflowNodeError(f"document extractor: fetching {url} failed: {type(e).__name__}") from None
        yield path, name
