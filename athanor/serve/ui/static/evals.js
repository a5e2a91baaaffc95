// Evals page: the stored runs (GET /v1/evals) with accuracy and 95% CI; pick A and B and compare them
// (GET /v1/evals/compare?a=&b=): the difference with its interval, McNemar p, the verdict, per-item diffs.
// The compare view is linkable: /ui/evals?a=RUN&b=RUN. Promote (when the server has it) points B's alias over A.
// Not for the shared key/fetch helpers (console.js).
"use strict";

(() => {
  const { el, json } = Athanor;
  const pick = { a: null, b: null };

  const pct = (x) => (x === null || x === undefined ? "" : (100 * x).toFixed(1) + "%");
  const signed = (x) => (x >= 0 ? "+" : "") + (100 * x).toFixed(1) + " pts";
  const when = (t) => (t ? new Date(t * 1000).toLocaleString() : "");

  function question(input) {
    if (input && !Array.isArray(input) && typeof input === "object") input = input.messages || input;
    if (Array.isArray(input) && input.length) {
      const last = input[input.length - 1];
      return typeof last === "object" && last ? String(last.content ?? "") : String(last);
    }
    return typeof input === "string" ? input : JSON.stringify(input);
  }

  async function loadRuns() {
    const runs = (await json("/v1/evals?limit=200")).data;
    document.getElementById("eval-rows").replaceChildren(...runs.map(runRow));
    syncPicks();
  }

  function runRow(r) {
    const radio = (side) => el("input", { type: "radio", name: "pick-" + side, value: r.run_id, "aria-label": side + " " + r.run_id,
      class: "pick-" + side, onchange: () => { pick[side] = r.run_id; syncPicks(); } });
    return el("tr", { class: "eval-row", "data-run-id": r.run_id },
      el("td", {}, radio("a")), el("td", {}, radio("b")), el("td", { class: "mono" }, r.run_id), el("td", {}, when(r.created)),
      el("td", { class: "mono" }, r.model), el("td", {}, r.scorer || r.kind || ""), el("td", { class: "num" }, r.n),
      el("td", { class: "num" }, pct(r.accuracy)),
      el("td", { class: "ci" }, r.ci_low === null || r.ci_low === undefined ? "" : pct(r.ci_low) + " – " + pct(r.ci_high),
        r.ci_low !== null && r.ci_low !== undefined ? ciBar(r) : null));
  }

  function ciBar(r) {  // the interval as a bar on 0..100%, the point estimate as a tick
    return el("div", { class: "ci-bar", title: "95% CI" },
      el("span", { class: "ci-range", style: `left:${100 * r.ci_low}%;width:${Math.max(100 * (r.ci_high - r.ci_low), 0.5)}%` }),
      el("span", { class: "ci-point", style: `left:${100 * r.accuracy}%` }));
  }

  function syncPicks() {
    for (const side of ["a", "b"]) for (const r of document.querySelectorAll("input.pick-" + side)) r.checked = r.value === pick[side];
    document.getElementById("compare-button").disabled = !(pick.a && pick.b && pick.a !== pick.b);
  }

  async function compare() {
    const q = new URLSearchParams({ a: pick.a, b: pick.b });
    history.replaceState(null, "", "/ui/evals?" + q);
    const result = await json("/v1/evals/compare?" + q);
    document.getElementById("compare").hidden = false;
    document.getElementById("cmp-a").textContent = result.a.run_id;
    document.getElementById("cmp-b").textContent = result.b.run_id;
    const verdict = result.worse ? ["worse", "B is worse than A beyond noise"] : result.better ? ["better", "B is better than A beyond noise"]
      : ["same", "no difference beyond noise"];
    document.getElementById("verdict").replaceChildren(...[
      el("p", { class: "verdict verdict-" + verdict[0], id: "verdict-text" }, verdict[1]),
      el("div", { class: "facts" },
        [["A", `${result.a.model} · ${pct(result.a_accuracy)}`], ["B", `${result.b.model} · ${pct(result.b_accuracy)}`],
          ["B − A", `${signed(result.diff)} (95% CI ${signed(result.ci_low)} … ${signed(result.ci_high)})`],
          ["McNemar p", Number(result.p_value).toPrecision(3)], ["paired items", result.n_paired],
          ["only A right / only B right", `${result.only_a_correct} / ${result.only_b_correct}`]]
          .map(([k, v]) => el("div", {}, el("span", { class: "muted" }, k), el("strong", {}, String(v))))),
      result.same_data === false ? el("p", { class: "muted" }, "The runs used different data files: only items with the same index and input are paired.") : null].filter(Boolean));
    renderDiff(result);
    const promote = document.getElementById("promote-button");
    if (promote) promote.hidden = result.worse;
    window.__lastCompare = result;
  }

  function renderDiff(result) {
    const only = document.getElementById("only-diff").checked;
    const rows = result.items.filter((it) => !only || it.changed || it.a_output !== it.b_output).map((it) => {
      const change = it.changed ? (it.b_correct ? el("span", { class: "badge succeeded" }, "fixed") : el("span", { class: "badge failed" }, "broke"))
        : el("span", { class: "badge" }, it.a_correct ? "both right" : "both wrong");
      const out = (text, ok) => el("td", { class: ok ? "right" : "wrong" }, el("pre", {}, text ?? ""));
      return el("tr", { class: "diff-row" + (it.changed ? " changed" : ""), "data-index": it.index },
        el("td", { class: "num" }, it.index), el("td", {}, el("pre", {}, question(it.input))),
        el("td", {}, el("pre", {}, Array.isArray(it.ideal) ? it.ideal.join(" | ") : String(it.ideal ?? ""))),
        out(it.a_output, it.a_correct), out(it.b_output, it.b_correct), el("td", {}, change));
    });
    document.getElementById("diff-rows").replaceChildren(...(rows.length ? rows
      : [el("tr", {}, el("td", { colspan: 6, class: "muted" }, "no item differs"))]));
  }

  async function promote() {
    const result = window.__lastCompare;
    await json("/v1/promote", { method: "POST", body: { a: result.a.run_id, b: result.b.run_id } });
    document.getElementById("promote-button").textContent = "Promoted";
    document.getElementById("promote-button").disabled = true;
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.getElementById("compare-button").addEventListener("click", Athanor.guard(compare));
    document.getElementById("only-diff").addEventListener("change", () => window.__lastCompare && renderDiff(window.__lastCompare));
    const promoteButton = document.getElementById("promote-button");
    if (promoteButton) promoteButton.addEventListener("click", Athanor.guard(promote));
    Athanor.ready(async () => {
      await loadRuns();
      const q = new URLSearchParams(location.search);
      if (q.get("a") && q.get("b")) {
        pick.a = q.get("a");
        pick.b = q.get("b");
        syncPicks();
        await compare();
      }
    });
  });
})();
