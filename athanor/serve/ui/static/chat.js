// Chat playground: models from /v1/models, answers streamed from /v1/chat/completions (SSE read with fetch and
// a ReadableStream), tokens/s and time to first token per answer, the trace link from X-Trace-Id; compare mode
// sends the same messages to two models at once.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  let controllers = [];

  async function loadModels() {
    const models = (await Athanor.json("/v1/models")).data.map((m) => m.id).sort();
    for (const select of [$("model"), $("model-b")]) {
      select.replaceChildren(...models.map((id) => Athanor.el("option", { value: id }, id)));
    }
    const saved = localStorage.getItem("athanor.chat.model");
    if (saved && models.includes(saved)) $("model").value = saved;
    if (models.length > 1) $("model-b").value = models.find((m) => m !== $("model").value);
  }

  function setCompare() {
    const on = $("compare").checked;
    document.querySelectorAll(".compare-only").forEach((e) => { e.hidden = !on; });
    $("pane-b").hidden = !on;
    $("answers").classList.toggle("single", !on);
  }

  function messages() {
    const out = [];
    if ($("system").value.trim()) out.push({ role: "system", content: $("system").value.trim() });
    out.push({ role: "user", content: $("prompt").value });
    return out;
  }

  function resetPane(side, model) {
    $("model-name-" + side).textContent = model;
    $("answer-" + side).textContent = "";
    for (const k of ["tokens", "tps", "ttft"]) $(k + "-" + side).textContent = k === "tokens" ? "0" : "–";
    $("finish-" + side).textContent = "";
    $("trace-" + side).hidden = true;
  }

  // One streamed answer into pane `side`. Tokens are counted from the usage chunk when the server sends one,
  // else one per content delta (the engine sends one delta per token).
  async function stream(side, model, body) {
    resetPane(side, model);
    const controller = new AbortController();
    controllers.push(controller);
    const t0 = performance.now();
    const response = await Athanor.fetch("/v1/chat/completions", {
      method: "POST", body: { ...body, model }, signal: controller.signal,
    });
    const traceId = response.headers.get("X-Trace-Id");
    if (traceId) {
      const link = $("trace-" + side);
      link.href = "/ui/traces/" + encodeURIComponent(traceId);
      link.textContent = "trace " + traceId.slice(0, 8);
      link.hidden = false;
    }
    let first = null, last = null, deltas = 0, usage = null;
    await Athanor.sse(response, (data) => {
      if (data === "[DONE]") return;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message || JSON.stringify(chunk.error));
      if (chunk.usage) usage = chunk.usage;
      for (const choice of chunk.choices || []) {
        const text = choice.delta && choice.delta.content;
        if (text) {
          const now = performance.now();
          if (first === null) { first = now; $("ttft-" + side).textContent = Math.round(now - t0); }
          last = now;
          deltas += 1;
          $("answer-" + side).append(text);
          $("tokens-" + side).textContent = deltas;
          if (deltas > 1) $("tps-" + side).textContent = ((deltas - 1) / ((last - first) / 1000)).toFixed(1);
        }
        if (choice.finish_reason) $("finish-" + side).textContent = "finish: " + choice.finish_reason;
      }
    });
    const n = usage ? usage.completion_tokens : deltas;
    $("tokens-" + side).textContent = n;
    // decode speed: tokens after the first over the time after the first (TTFT is shown on its own)
    if (n > 1 && last > first) $("tps-" + side).textContent = ((n - 1) / ((last - first) / 1000)).toFixed(1);
  }

  async function send(event) {
    event.preventDefault();
    Athanor.clearError();
    const body = {
      messages: messages(), stream: true, stream_options: { include_usage: true },
      temperature: Number($("temperature").value), top_p: Number($("top-p").value),
      max_tokens: Number($("max-tokens").value),
    };
    const runs = [["a", $("model").value]];
    if ($("compare").checked) runs.push(["b", $("model-b").value]);
    localStorage.setItem("athanor.chat.model", $("model").value);
    $("send").disabled = true;
    $("stop").disabled = false;
    controllers = [];
    try {
      const results = await Promise.allSettled(runs.map(([side, model]) => stream(side, model, body)));
      const failed = results.find((r) => r.status === "rejected" && r.reason.name !== "AbortError");
      if (failed) Athanor.showError(failed.reason.message || failed.reason);
    } finally {
      $("send").disabled = false;
      $("stop").disabled = true;
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("chat-form").addEventListener("submit", Athanor.guard(send));
    $("compare").addEventListener("change", setCompare);
    $("stop").addEventListener("click", () => controllers.forEach((c) => c.abort()));
    $("prompt").addEventListener("keydown", (e) => {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) $("chat-form").requestSubmit();
    });
    setCompare();
  });
  Athanor.ready(loadModels);
})();
