// Knowledge page: the bases (/v1/kb), one base's documents (/ui/api/kb/{name}/documents), and a query box that
// shows the retrieved chunks with their scores (POST /v1/kb/{name}/query).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const el = Athanor.el;
  let current = null;

  async function loadBases() {
    const bases = (await Athanor.json("/v1/kb")).data;
    $("kbs-empty").hidden = bases.length > 0;
    $("kbs").replaceChildren(...bases.map((b) => el("li", {},
      el("a", { href: "#", "data-kb": b.name, onclick: (e) => { e.preventDefault(); Athanor.guard(open)(b); } }, b.name),
      " ", el("span", { class: "muted" }, `${b.documents} docs · ${b.chunks} chunks`))));
  }

  async function open(base) {
    current = base.name;
    $("kb-detail").hidden = false;
    $("kb-name").textContent = base.name;
    $("kb-facts").textContent = `embedder ${base.embedder} · chunk ${base.chunk_size} tokens, overlap ${base.chunk_overlap}`;
    $("hits-table").hidden = true;
    $("hits-empty").hidden = true;
    const docs = (await Athanor.json("/ui/api/kb/" + encodeURIComponent(base.name) + "/documents")).data;
    $("docs-table").tBodies[0].replaceChildren(...docs.map((d) => el("tr", { "data-source": d.source },
      el("td", { class: "mono" }, d.source), el("td", {}, d.num_chunks),
      el("td", { class: "muted" }, d.mtime ? new Date(d.mtime * 1000).toLocaleString() : ""))));
  }

  async function query(event) {
    event.preventDefault();
    const body = { query: $("query").value, mode: $("mode").value, k: Number($("k").value) };
    $("query-send").disabled = true;
    try {
      const hits = (await Athanor.json("/v1/kb/" + encodeURIComponent(current) + "/query", { method: "POST", body })).hits;
      $("hits-empty").hidden = hits.length > 0;
      $("hits-table").hidden = hits.length === 0;
      $("hits-table").tBodies[0].replaceChildren(...hits.map((h) => el("tr", { "data-rank": h.rank },
        el("td", {}, h.rank), el("td", { class: "score mono" }, h.score.toFixed(4)),
        el("td", { class: "source" }, h.citation || h.source), el("td", { class: "chunk" }, el("pre", {}, h.text)))));
    } finally {
      $("query-send").disabled = false;
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("query-form").addEventListener("submit", Athanor.guard(query));
  });
  Athanor.ready(loadBases);
})();
