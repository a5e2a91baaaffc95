"""Files in Dify's service API requests: uploads by id (or remote URLs), never server paths.

`resolve_files` turns a request's `files` entries ({"transfer_method": "local_file", "upload_file_id": ID} of
this app's uploads, or {"transfer_method": "remote_url", "url": ...}) into the file values a run sees;
anything else is a 400. `file_inputs` does the same for start variables of type file / file-list.
Not for: storing uploads (service_store.py) or the upload route (dify_api.py).
"""

from __future__ import annotations

from athanor.serve.workflow_routes import DifyError


def resolve_files(files: list | None, app_name: str) -> list[dict]:
    """Request `files` entries -> file values for the run: uploads by id (this app's), remote URLs as URLs.
    Anything else (a path, an unknown id) is a 400, so no request can point the server at its own files."""
    from athanor.workflow.service_store import ServiceStore

    out = []
    for item in files or []:
        if not isinstance(item, dict):
            raise DifyError("each file must be an object with transfer_method", 400, "invalid_param")
        method = item.get("transfer_method")
        kind = item.get("type") or "document"
        if method == "local_file":
            row = ServiceStore().upload(str(item.get("upload_file_id") or ""))
            if row is None or row["app_name"] != app_name:
                raise DifyError(f"upload {item.get('upload_file_id')!r} not found", 404, "file_not_found")
            out.append({"dify_model_identity": "__dify__file__", "id": row["id"], "type": kind,
                        "transfer_method": "local_file", "related_id": row["id"], "filename": row["name"],
                        "extension": f".{row['extension']}" if row["extension"] else "", "mime_type": row["mime_type"],
                        "size": row["size"], "path": row["path"]})
        elif method == "remote_url" and str(item.get("url") or "").startswith(("http://", "https://")):
            out.append({"dify_model_identity": "__dify__file__", "type": kind, "transfer_method": "remote_url",
                        "remote_url": item["url"], "url": item["url"], "filename": str(item["url"]).rsplit("/", 1)[-1]})
        else:
            raise DifyError("files take transfer_method local_file (with upload_file_id) or remote_url (with url)",
                            400, "invalid_param")
    return out


def file_inputs(start: dict, inputs: dict, app_name: str) -> dict:
    """Start variables (the start node's `start` data) of type file / file-list take upload references,
    resolved like `files`."""
    out = dict(inputs)
    for var in start.get("variables") or []:
        name, kind = var.get("variable"), var.get("type")
        if kind in ("file", "file-list") and out.get(name) not in (None, "", []):
            value = out[name]
            resolved = resolve_files(value if isinstance(value, list) else [value], app_name)
            out[name] = resolved if kind == "file-list" else resolved[0]
    return out
