// Models page: the store (/api/tags, context from /api/show), what is loaded (/api/ps, refreshed every 5 s),
// and one model's details with its lineage (the manifest's `lineage`, when the store recorded one) as a tree.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const el = Athanor.el;
  const shows = {};

  const show = (name) => (shows[name] = shows[name] || Athanor.json("/api/show", { method: "POST", body: { model: name } }));

  function contextOf(info) {
    const key = Object.keys(info.model_info || {}).find((k) => k.endsWith(".context_length"));
    return key ? info.model_info[key] : "";
  }

  async function loadStore() {
    const models = (await Athanor.json("/api/tags")).models;
    const rows = models.map((m) => {
      const d = m.details || {};
      const context = el("td", { class: "context" });
      show(m.name).then((info) => { context.textContent = contextOf(info); }).catch((e) => Athanor.showError(e.message));
      return el("tr", { class: "clickable", "data-model": m.name, onclick: () => Athanor.guard(detail)(m.name) },
        el("td", { class: "mono" }, m.name), el("td", {}, d.family || ""), el("td", {}, d.parameter_size || ""),
        el("td", { class: "quant" }, d.quantization_level || ""), el("td", {}, d.format || ""),
        el("td", { class: "size", title: m.size + " bytes" }, Athanor.bytes(m.size)), context,
        el("td", { class: "muted" }, (m.modified_at || "").slice(0, 19).replace("T", " ")));
    });
    $("models-table").tBodies[0].replaceChildren(...rows);
  }

  async function loadLoaded() {
    const models = (await Athanor.json("/api/ps")).models;
    $("loaded-empty").hidden = models.length > 0;
    $("loaded-table").hidden = models.length === 0;
    $("loaded-table").tBodies[0].replaceChildren(...models.map((m) => el("tr", { "data-model": m.name },
      el("td", { class: "mono" }, m.name), el("td", { class: "memory", title: m.size + " bytes" }, Athanor.bytes(m.size)),
      el("td", {}, m.context_length), el("td", { class: "muted" }, m.expires_at.startsWith("9999") ? "never" : m.expires_at.slice(11, 19)))));
  }

  // A lineage record as a tree: objects and lists nest, the rest are leaves ("key: value").
  function tree(value, key) {
    const label = key === undefined ? null : el("strong", {}, key);
    if (value && typeof value === "object") {
      const entries = Array.isArray(value) ? value.map((v, i) => [String(i + 1), v]) : Object.entries(value);
      return el("li", {}, label, el("ul", {}, entries.map(([k, v]) => tree(v, k))));
    }
    return el("li", {}, label, label ? ": " : "", el("span", { class: "mono" }, String(value)));
  }

  // The FROM chain as nested boxes (the model inside what it was built from), then what its manifest records.
  function lineageGraph(info) {
    // digest and creation time every model has; recorded lineage is what training, export, evals or promotion left
    const recorded = Object.keys(info.lineage || {}).some((k) => k !== "digest" && k !== "created_at");
    if (!info.parents.length && !info.adapters.length && !recorded) {
      return el("p", { class: "muted" }, "No lineage recorded: a built-in or imported model.");
    }
    let node = el("li", { class: "lineage-self" }, el("strong", { class: "mono" }, info.name),
      info.adapters.length ? el("ul", {}, info.adapters.map((a) => el("li", {}, "adapter ", el("span", { class: "mono" }, a)))) : null,
      recorded ? el("ul", {}, Object.entries(info.lineage).map(([k, v]) => tree(v, k))) : null);
    for (const parent of info.parents) {
      node = el("li", { class: "lineage-parent" }, "from ", el("span", { class: "mono" }, parent), el("ul", {}, node));
    }
    return el("ul", { class: "lineage-tree" }, node);
  }

  async function detail(name) {
    const info = await show(name);
    document.querySelectorAll("#models-table tr.selected").forEach((r) => r.classList.remove("selected"));
    const row = document.querySelector(`#models-table tr[data-model="${CSS.escape(name)}"]`);
    if (row) row.classList.add("selected");
    $("model-detail").hidden = false;
    $("detail-name").textContent = name;
    $("detail-params").textContent = info.parameters || "(none)";
    $("detail-caps").textContent = (info.capabilities || []).join(", ");
    $("detail-template").textContent = (info.template || "").slice(0, 2000);
    const lineage = await Athanor.json("/ui/api/models/" + encodeURIComponent(name) + "/lineage");
    $("detail-lineage").replaceChildren(lineageGraph(lineage));
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("refresh-loaded").addEventListener("click", Athanor.guard(loadLoaded));
  });
  Athanor.ready(async () => {
    await Promise.all([loadStore(), loadLoaded()]);
    setInterval(Athanor.guard(loadLoaded), 5000);
  });
})();
