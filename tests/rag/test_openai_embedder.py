"""The OpenAI-compatible embedder against a real HTTP server on 127.0.0.1 that serves MiniLM's vectors:
a base built through it ranks exactly like one built with the in-process MiniLM."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from athanor.rag.embed import get_embedder
from athanor.rag.kb import KnowledgeBase
from tests.rag.files import write_corpus


@pytest.fixture
def server(embedder):
    requests = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            requests.append((self.path, body))
            if self.path != "/v1/embeddings":
                self.send_error(404)
                return
            vecs = embedder.embed(body["input"]) * 3.0  # not unit length: the client normalises
            data = [{"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vecs)]
            out = json.dumps({"object": "list", "data": data[::-1], "model": body["model"]}).encode()  # any order
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", requests
    httpd.shutdown()
    httpd.server_close()


def test_remote_embedder_ranks_like_local(tmp_path, embedder, server):
    url, requests = server
    write_corpus(tmp_path / "docs")
    local = KnowledgeBase.create("local", embedder_obj=embedder)
    remote = KnowledgeBase.create("remote", embedder=f"openai:{url}#minilm")
    assert remote.config.embedder == f"openai:{url}#minilm" and remote.embedder.dim == 384
    for kb in (local, remote):
        kb.add([tmp_path / "docs"])
    assert all(body["model"] == "minilm" for _, body in requests)
    for q in ("patch a punctured tyre", "who found a moth", "coral reefs"):
        a, b = local.query(q, k=5, mode="vector"), remote.query(q, k=5, mode="vector")
        assert [h.source for h in a] == [h.source for h in b]
        assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-5)


def test_bad_remote_specs():
    with pytest.raises(ValueError, match="expected openai"):
        get_embedder("openai:localhost#m")
    with pytest.raises(ValueError, match="unknown embedder"):
        get_embedder("word2vec")
