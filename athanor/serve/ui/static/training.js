// Training page: start a fine-tuning job from the form or a LLaMA-Factory YAML (POST /v1/fine_tuning/jobs),
// follow the selected job every second (its loss events -> a uPlot curve, its status and step), stop it
// (POST .../cancel), and list past jobs with their final loss and the model they produced.
// Not for the shared key/fetch helpers (console.js) or running training (the server's job manager).
"use strict";

(() => {
  const { el, json } = Athanor;
  const ACTIVE = ["validating_files", "queued", "running"];
  let current = null;   // the job id shown in the live panel
  let plot = null;      // the uPlot instance of that job
  let timer = null;

  const when = (t) => (t ? new Date(t * 1000).toLocaleString() : "");
  const fmtLoss = (x) => (x === null || x === undefined ? "" : Number(x).toFixed(4));

  function formBody() {
    if (document.querySelector("input[name=mode]:checked").value === "yaml") {
      const text = document.getElementById("t-yaml").value;
      if (!text.trim()) throw new Error("paste a LLaMA-Factory YAML first");
      const body = { yaml: text };
      const suffix = document.getElementById("t-suffix").value.trim();
      if (suffix) body.suffix = suffix;
      return body;
    }
    const value = (id) => document.getElementById(id).value.trim();
    const config = { stage: value("t-stage"), finetuning_type: value("t-type"), num_train_epochs: Number(value("t-epochs")),
      learning_rate: Number(value("t-lr")), logging_steps: Number(value("t-logging")) };
    const maxSteps = Number(value("t-max-steps"));
    if (maxSteps > 0) config.max_steps = maxSteps;
    const body = { model: value("t-model"), config };
    if (value("t-dataset")) body.training_file = value("t-dataset");
    if (value("t-suffix")) body.suffix = value("t-suffix");
    return body;
  }

  async function start(e) {
    e.preventDefault();
    const error = document.getElementById("t-error");
    error.textContent = "";
    let job;
    try {
      job = await json("/v1/fine_tuning/jobs", { method: "POST", body: formBody() });
    } catch (err) {
      error.textContent = err.message.replace(/^\/v1\/fine_tuning\/jobs: /, "");  // a refused config: shown by the form
      return;
    }
    await loadJobs();
    select(job.id);
  }

  async function loadJobs() {
    const jobs = (await json("/v1/fine_tuning/jobs?limit=100")).data;
    document.getElementById("job-rows").replaceChildren(...jobs.map(jobRow));
    return jobs;
  }

  function jobRow(j) {
    const stop = ACTIVE.includes(j.status) ? el("button", { type: "button", class: "danger small stop-job", "data-job-id": j.id,
      onclick: Athanor.guard(async (e) => { e.stopPropagation(); await cancel(j.id); }) }, "Stop") : null;
    return el("tr", { class: "clickable job-row" + (j.id === current ? " selected" : ""), "data-job-id": j.id, onclick: () => select(j.id) },
      el("td", { class: "mono" }, j.id.slice(0, 14) + "…"), el("td", {}, when(j.created_at)), el("td", { class: "mono" }, j.model),
      el("td", {}, el("span", { class: "badge " + j.status }, j.status)),
      el("td", { class: "num" }, j.total_steps ? j.step + " / " + j.total_steps : String(j.step || "")),
      el("td", { class: "num" }, fmtLoss(j.final_loss)), el("td", { class: "mono" }, j.fine_tuned_model || ""), el("td", {}, stop));
  }

  async function cancel(id) {
    await json("/v1/fine_tuning/jobs/" + encodeURIComponent(id) + "/cancel", { method: "POST" });
    await loadJobs();
    if (id === current) await refresh();
  }

  function select(id) {
    current = id;
    if (plot) { plot.destroy(); plot = null; }
    document.getElementById("loss-chart").replaceChildren();
    for (const row of document.querySelectorAll("tr.job-row")) row.classList.toggle("selected", row.dataset.jobId === id);
    if (timer) clearInterval(timer);
    Athanor.guard(refresh)();
    timer = setInterval(Athanor.guard(refresh), 1000);
  }

  function drawCurve(points) {
    const box = document.getElementById("loss-chart");
    const data = [points.map((p) => p.step), points.map((p) => p.loss)];
    box.dataset.points = String(points.length);  // what the browser tests count
    if (!points.length) return;
    if (!plot) {
      const width = Math.max(Math.min(box.clientWidth || 600, 900), 260);
      plot = new uPlot({ width, height: 240, scales: { x: { time: false } },
        axes: [{ label: "step", incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000] }, { label: "loss" }],
        series: [{ label: "step" }, { label: "train loss", stroke: "#b4501e", width: 2, points: { show: points.length < 60 } }] }, data, box);
    } else {
      plot.setData(data);
    }
  }

  async function refresh() {
    const id = current;
    if (!id) return;
    const [job, events] = await Promise.all([json("/v1/fine_tuning/jobs/" + encodeURIComponent(id)),
      json("/v1/fine_tuning/jobs/" + encodeURIComponent(id) + "/events?limit=10000")]);
    if (id !== current) return;  // another job was picked meanwhile
    const points = events.data.filter((e) => e.type === "metrics" && e.data && e.data.loss !== undefined)
      .map((e) => e.data).sort((a, b) => a.step - b.step);
    document.getElementById("live-id").textContent = job.id;
    const status = document.getElementById("live-status");
    status.textContent = job.status;
    status.className = "badge " + job.status;
    const last = points[points.length - 1];
    document.getElementById("live-step").textContent = last ? `step ${last.step}${last.total_steps ? " / " + last.total_steps : ""} · loss ${fmtLoss(last.loss)}` : "waiting for the first step…";
    document.getElementById("live-stop").hidden = !ACTIVE.includes(job.status);
    document.getElementById("live-model").textContent = job.fine_tuned_model ? "produced model: " + job.fine_tuned_model
      : job.error ? "error: " + job.error.message : "";
    document.getElementById("live-config-text").textContent = JSON.stringify(job.config, null, 2);
    drawCurve(points);
    await loadJobs();  // the table's step, status and final loss follow too
    if (!ACTIVE.includes(job.status)) {
      clearInterval(timer);
      timer = null;
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    for (const radio of document.querySelectorAll("input[name=mode]")) radio.addEventListener("change", () => {
      const yaml = document.querySelector("input[name=mode]:checked").value === "yaml";
      document.getElementById("yaml-fields").hidden = !yaml;
      document.getElementById("form-fields").hidden = yaml;
      document.getElementById("t-model").required = !yaml;
    });
    document.getElementById("train-form").addEventListener("submit", Athanor.guard(start));
    document.getElementById("live-stop").addEventListener("click", Athanor.guard(() => cancel(current)));
    Athanor.ready(async () => {
      const models = await json("/v1/models").catch(() => ({ data: [] }));
      document.getElementById("t-models").replaceChildren(...models.data.map((m) => el("option", { value: m.id })));
      const jobs = await loadJobs();
      const live = jobs.find((j) => ACTIVE.includes(j.status)) || jobs[0];
      if (live) select(live.id);
    });
  });
})();
