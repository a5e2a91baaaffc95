// Workflows page: installed apps (/v1/workflows/apps), their runs (/ui/api/workflows/runs), and one run's graph
// and node results as a server-rendered fragment swapped in by htmx (/ui/api/workflows/runs/{id}/view).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const el = Athanor.el;
  let app = null;  // the app title runs are filtered by (runs record the app's title)

  async function loadApps() {
    const apps = (await Athanor.json("/v1/workflows/apps")).data;
    $("apps-empty").hidden = apps.length > 0;
    $("apps").replaceChildren(
      el("li", {}, el("a", { href: "#", "data-app": "", onclick: pick(null) }, "all apps")),
      ...apps.map((a) => el("li", {}, el("a", { href: "#", "data-app": a.title || a.name, onclick: pick(a.title || a.name) },
        a.title || a.name), " ", el("span", { class: "badge" }, a.mode || "error"))));
  }

  const pick = (title) => (event) => {
    event.preventDefault();
    app = title;
    $("runs-filter").textContent = title ? "· " + title : "";
    Athanor.guard(loadRuns)();
  };

  async function loadRuns() {
    const query = app ? "?app=" + encodeURIComponent(app) : "";
    const runs = (await Athanor.json("/ui/api/workflows/runs" + query)).data;
    $("runs-empty").hidden = runs.length > 0;
    $("runs-table").tBodies[0].replaceChildren(...runs.map((r) => el("tr", {
      class: "clickable", "data-run-id": r.id, onclick: () => openRun(r.id),
    }, el("td", { class: "mono" }, r.id.slice(0, 8)), el("td", {}, r.app_name),
    el("td", {}, el("span", { class: "badge " + r.status }, r.status)), el("td", {}, r.total_steps ?? ""),
    el("td", {}, (r.elapsed_time || 0).toFixed(2)), el("td", { class: "muted" }, new Date(r.created_at * 1000).toLocaleString()))));
  }

  function openRun(id) {
    document.querySelectorAll("#runs-table tr.selected").forEach((r) => r.classList.remove("selected"));
    const row = document.querySelector(`#runs-table tr[data-run-id="${CSS.escape(id)}"]`);
    if (row) row.classList.add("selected");
    htmx.ajax("GET", "/ui/api/workflows/runs/" + encodeURIComponent(id) + "/view", { target: "#run-view", swap: "innerHTML" });
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("refresh-runs").addEventListener("click", Athanor.guard(loadRuns));
  });
  Athanor.ready(() => Promise.all([loadApps(), loadRuns()]));
})();
