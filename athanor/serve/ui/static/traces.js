// Traces pages: the filterable list (/ui/traces) with export of the selected traces, and one trace
// (/ui/traces/ID): the span tree on a timeline, a span's inputs/outputs, thumbs up/down and a correction.
// Reads GET /v1/traces and /v1/traces/{id}; writes POST /v1/feedback; POST /v1/traces/export downloads JSONL.
// Not for the shared key/fetch helpers (console.js).
"use strict";

(() => {
  const { el, json } = Athanor;
  const KIND_COLORS = { http: "#8a8a8a", llm: "#b4501e", agent: "#6a4c93", tool: "#1982c4", workflow: "#2a9d8f",
    node: "#52b788", retrieval: "#e9c46a", embedding: "#f4a261", eval: "#e76f51", chain: "#457b9d" };

  const seconds = (s) => (s === null || s === undefined ? "" : s < 1 ? (s * 1000).toFixed(0) + " ms" : s.toFixed(2) + " s");
  const when = (t) => (t ? new Date(t * 1000).toLocaleString() : "");
  const feedbackText = (score) => (score === null || score === undefined ? "" : score > 0 ? "▲ good" : score < 0 ? "▼ bad" : "0 neutral");

  // ---------------------------------------------------------------------------------------------- the list

  const selected = new Set();

  function query() {
    const q = new URLSearchParams({ limit: "500" });
    const model = document.getElementById("f-model").value.trim();
    if (model) q.set("model", model);
    const since = document.getElementById("f-since").value;
    if (since) q.set("since", since);
    const feedback = document.getElementById("f-feedback").value;
    if (feedback) q.set("feedback", feedback);
    if (document.getElementById("f-errors").checked) q.set("errors", "true");
    return q;
  }

  async function loadList() {
    const rows = (await json("/v1/traces?" + query())).data;
    if (document.getElementById("f-sort").value === "slowest") rows.sort((a, b) => (b.duration || 0) - (a.duration || 0));
    const body = document.getElementById("trace-rows");
    body.replaceChildren(...rows.map(traceRow));
    document.getElementById("trace-count").textContent = rows.length + (rows.length === 1 ? " trace" : " traces");
    const models = [...new Set(rows.map((r) => r.model).filter(Boolean))];
    document.getElementById("trace-models").replaceChildren(...models.map((m) => el("option", { value: m })));
    for (const id of [...selected]) if (!rows.some((r) => r.trace_id === id)) selected.delete(id);
    updateSelection();
  }

  function traceRow(t) {
    const box = el("input", { type: "checkbox", class: "pick", "data-trace-id": t.trace_id, "aria-label": "select" });
    box.checked = selected.has(t.trace_id);
    box.addEventListener("click", (e) => e.stopPropagation());
    box.addEventListener("change", () => { box.checked ? selected.add(t.trace_id) : selected.delete(t.trace_id); updateSelection(); });
    const open = () => { window.location.href = "/ui/traces/" + encodeURIComponent(t.trace_id); };
    const status = t.status === "error" ? el("span", { class: "badge error", title: t.error || "" }, "error") : el("span", { class: "badge ok" }, "ok");
    return el("tr", { class: "clickable trace-row", "data-trace-id": t.trace_id, onclick: open },
      el("td", {}, box), el("td", { class: "mono" }, when(t.start)),
      el("td", {}, el("a", { href: "/ui/traces/" + encodeURIComponent(t.trace_id) }, t.name || t.trace_id.slice(0, 12))),
      el("td", {}, t.model || ""), el("td", { class: "num" }, seconds(t.duration)),
      el("td", { class: "num" }, (t.input_tokens || 0) + " / " + (t.output_tokens || 0)),
      el("td", {}, status), el("td", { class: "feedback-cell" }, feedbackText(t.score)));
  }

  function updateSelection() {
    document.getElementById("selected-count").textContent = selected.size + " selected";
    for (const id of ["export-sft", "export-dpo"]) document.getElementById(id).disabled = selected.size === 0;
    for (const row of document.querySelectorAll("tr.trace-row")) row.classList.toggle("selected", selected.has(row.dataset.traceId));
  }

  async function exportSelected(format) {
    const response = await Athanor.fetch("/v1/traces/export", { method: "POST", body: { format, trace_ids: [...selected] } });
    const text = await response.text();
    const records = text.split("\n").filter((l) => l.trim()).length;
    const url = URL.createObjectURL(new Blob([text], { type: "application/jsonl" }));
    const link = el("a", { href: url, download: "traces-" + format + ".jsonl", hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    document.getElementById("export-note").textContent = records + " " + format.toUpperCase() + " record(s) from " + selected.size +
      " selected trace(s)" + (records < selected.size ? " (only good or corrected traces become SFT data; only corrected ones DPO pairs)" : "");
  }

  function startList() {
    document.getElementById("trace-filters").addEventListener("submit", Athanor.guard(async (e) => { e.preventDefault(); await loadList(); }));
    for (const id of ["f-since", "f-feedback", "f-sort", "f-errors"]) document.getElementById(id).addEventListener("change", Athanor.guard(loadList));
    document.getElementById("select-all").addEventListener("change", (e) => {
      for (const box of document.querySelectorAll("input.pick")) {
        box.checked = e.target.checked;
        box.checked ? selected.add(box.dataset.traceId) : selected.delete(box.dataset.traceId);
      }
      updateSelection();
    });
    document.getElementById("export-sft").addEventListener("click", Athanor.guard(() => exportSelected("sft")));
    document.getElementById("export-dpo").addEventListener("click", Athanor.guard(() => exportSelected("dpo")));
    Athanor.ready(loadList);
  }

  // ------------------------------------------------------------------------------------------ one trace

  let trace = null;

  // Spans in tree order (parent before children, siblings by start) with their depth.
  function spanTree(spans) {
    const ids = new Set(spans.map((s) => s.span_id));
    const children = new Map();
    for (const s of spans) {
      const parent = s.parent_id && ids.has(s.parent_id) ? s.parent_id : null;
      if (!children.has(parent)) children.set(parent, []);
      children.get(parent).push(s);
    }
    const out = [];
    const walk = (parent, depth) => {
      for (const s of (children.get(parent) || []).sort((a, b) => a.start - b.start)) {
        out.push({ span: s, depth });
        walk(s.span_id, depth + 1);
      }
    };
    walk(null, 0);
    return out;
  }

  function drawTimeline(spans) {
    const t0 = Math.min(...spans.map((s) => s.start));
    const t1 = Math.max(...spans.map((s) => s.end_time || s.start));
    const total = Math.max(t1 - t0, 1e-6);
    const rows = spanTree(spans).map(({ span, depth }) => {
      const left = ((span.start - t0) / total) * 100;
      const width = Math.max((((span.end_time || span.start) - span.start) / total) * 100, 0.4);
      const bar = el("div", { class: "bar kind-" + span.kind, title: span.name + " · " + seconds((span.end_time || span.start) - span.start),
        style: `left:${left.toFixed(3)}%;width:${Math.min(width, 100 - left).toFixed(3)}%;background:${KIND_COLORS[span.kind] || "#999"}` });
      return el("div", { class: "span-row" + (span.status === "error" ? " error" : ""), "data-span-id": span.span_id, "data-kind": span.kind,
        "data-depth": depth, onclick: () => showSpan(span) },
        el("div", { class: "span-label", style: `padding-left:${depth * 16}px` },
          el("span", { class: "kind-dot", style: `background:${KIND_COLORS[span.kind] || "#999"}` }), span.name,
          el("span", { class: "muted" }, " " + span.kind)),
        el("div", { class: "span-track" }, bar),
        el("div", { class: "span-time num" }, seconds((span.end_time || span.start) - span.start)));
    });
    const legend = el("div", { class: "legend" }, [...new Set(spans.map((s) => s.kind))].map((k) =>
      el("span", {}, el("span", { class: "kind-dot", style: `background:${KIND_COLORS[k] || "#999"}` }), k)));
    document.getElementById("timeline").replaceChildren(legend, ...rows, el("div", { class: "axis muted" }, "0", el("span", {}, seconds(total))));
  }

  function pretty(value) {
    if (typeof value !== "string") return JSON.stringify(value, null, 2);
    try { return JSON.stringify(JSON.parse(value), null, 2); } catch (e) { return value; }
  }

  function showSpan(span) {
    for (const row of document.querySelectorAll(".span-row")) row.classList.toggle("active", row.dataset.spanId === span.span_id);
    const a = span.attributes || {};
    const content = [["input", "gen_ai.input.messages"], ["output", "gen_ai.output.messages"],
      ["tool arguments", "gen_ai.tool.call.arguments"], ["tool result", "gen_ai.tool.call.result"]]
      .filter(([, k]) => a[k] !== undefined)
      .map(([label, k]) => el("div", { class: "io" }, el("h3", {}, label), el("pre", { class: "io-" + label.replace(" ", "-") }, pretty(a[k]))));
    const rest = Object.entries(a).filter(([k]) => !k.startsWith("gen_ai.input.") && !k.startsWith("gen_ai.output.") && !k.startsWith("gen_ai.tool.call.a") && k !== "gen_ai.tool.call.result");
    document.getElementById("span-detail").replaceChildren(...[
      el("h3", {}, span.name, " ", el("span", { class: "badge" }, span.kind)),
      span.error ? el("p", { class: "bad-text" }, span.error) : null,
      content.length ? el("div", { class: "grid2" }, content) : el("p", { class: "muted" }, "no captured content on this span"),
      el("table", { class: "attrs" }, el("tbody", {}, rest.map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", { class: "mono" }, typeof v === "string" ? v : JSON.stringify(v))))))].filter(Boolean));
  }

  function summary(t) {
    document.getElementById("trace-summary").replaceChildren(el("div", { class: "facts" },
      [["name", t.name], ["model", t.model || "—"], ["started", when(t.start)], ["latency", seconds(t.duration)],
        ["tokens in / out", (t.input_tokens || 0) + " / " + (t.output_tokens || 0)], ["spans", Array.isArray(t.spans) ? t.spans.length : t.spans],
        ["status", t.status + (t.error ? ": " + t.error : "")], ["request", t.request_id || "—"]]
        .map(([k, v]) => el("div", {}, el("span", { class: "muted" }, k), el("strong", {}, String(v ?? ""))))));
  }

  function feedbackView(t) {
    const latest = t.feedback.length ? t.feedback[t.feedback.length - 1] : null;
    document.getElementById("feedback-score").textContent = latest ? "latest: " + feedbackText(latest.score) : "not rated yet";
    document.getElementById("thumb-up").classList.toggle("on", !!latest && latest.score > 0);
    document.getElementById("thumb-down").classList.toggle("on", !!latest && latest.score < 0);
    document.getElementById("feedback-list").replaceChildren(...t.feedback.slice().reverse().map((f) =>
      el("li", {}, el("span", { class: "mono" }, when(f.created)), " ", feedbackText(f.score), " ", f.source ? el("span", { class: "muted" }, "(" + f.source + ")") : null,
        f.comment ? el("div", {}, "comment: " + f.comment) : null, f.correction ? el("pre", { class: "correction" }, f.correction) : null)));
  }

  async function loadTrace() {
    const id = document.getElementById("trace-id").dataset.traceId;
    trace = await json("/v1/traces/" + encodeURIComponent(id));
    summary(trace);
    drawTimeline(trace.spans);
    const llm = trace.spans.find((s) => s.kind === "llm") || trace.spans[0];
    if (llm) showSpan(llm);
    feedbackView(trace);
  }

  async function sendFeedback(score, withCorrection) {
    const comment = document.getElementById("feedback-comment").value.trim();
    const correction = withCorrection ? document.getElementById("feedback-correction").value.trim() : "";
    const body = { trace_id: trace.trace_id, score };
    if (comment) body.comment = comment;
    if (correction) body.correction = correction;
    const row = await json("/v1/feedback", { method: "POST", body });
    trace.feedback.push(row);
    feedbackView(trace);
    document.getElementById("feedback-saved").textContent = "saved" + (row.correction ? " with correction" : "");
  }

  function startTrace() {
    document.getElementById("thumb-up").addEventListener("click", Athanor.guard(() => sendFeedback(1, false)));
    document.getElementById("thumb-down").addEventListener("click", Athanor.guard(() => sendFeedback(-1, false)));
    // A correction says the answer was wrong: it is stored with a bad score (DPO: correction chosen, answer rejected).
    document.getElementById("feedback-save").addEventListener("click", Athanor.guard(async () => {
      if (!document.getElementById("feedback-correction").value.trim()) throw new Error("type the corrected answer first");
      await sendFeedback(-1, true);
    }));
    Athanor.ready(loadTrace);
  }

  document.addEventListener("DOMContentLoaded", () => {
    if (document.getElementById("trace-table")) startList();
    if (document.getElementById("timeline")) startTrace();
  });
})();
