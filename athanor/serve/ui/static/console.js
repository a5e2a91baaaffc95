// The console's shared script: the API key, authenticated fetch/htmx, the error banner, small DOM helpers.
// Pages call Athanor.ready(fn): fn runs once the key is known (or the server needs none).
// Not for page logic (each page has its own script) or for rendering data as HTML strings (use Athanor.el).
"use strict";

const Athanor = (() => {
  const KEY_STORE = "athanor.apiKey";
  const waiting = [];
  let started = false;

  const authRequired = () => document.body.dataset.authRequired === "true";
  const key = () => localStorage.getItem(KEY_STORE) || "";

  function authHeaders(extra) {
    const headers = Object.assign({}, extra || {});
    if (key()) headers["Authorization"] = "Bearer " + key();
    return headers;
  }

  // The one-line message of an error body in any of the server's shapes (OpenAI, Ollama, Dify).
  function errorMessage(body, status) {
    if (body && typeof body.error === "object" && body.error) return body.error.message || JSON.stringify(body.error);
    if (body && typeof body.error === "string") return body.error;
    if (body && body.message) return body.message;
    if (body && body.detail) return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    return "HTTP " + status;
  }

  // fetch with the key; a JS object body is sent as JSON. Resolves to the Response; rejects on HTTP errors.
  async function apiFetch(path, opts) {
    opts = Object.assign({}, opts || {});
    const headers = authHeaders(opts.headers);
    if (opts.body !== undefined && typeof opts.body !== "string") {
      opts.body = JSON.stringify(opts.body);
      headers["Content-Type"] = "application/json";
    } else if (typeof opts.body === "string") {
      headers["Content-Type"] = headers["Content-Type"] || "application/json";
    }
    opts.headers = headers;
    const response = await fetch(path, opts);
    if (!response.ok) {
      let body = null;
      try { body = await response.json(); } catch (e) { body = null; }
      if (response.status === 401) askKey("The server refused the key: " + errorMessage(body, 401));
      const err = new Error(path + ": " + errorMessage(body, response.status));
      err.status = response.status;
      throw err;
    }
    return response;
  }

  async function json(path, opts) {
    return (await apiFetch(path, opts)).json();
  }

  // Server-sent events from a streamed Response: onData(dataString) for each event's data ("[DONE]" included).
  async function sse(response, onData) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
        const data = block.split(/\r?\n/).filter((l) => l.startsWith("data:"))
          .map((l) => l.slice(5).replace(/^ /, "")).join("\n");
        if (data) onData(data);
      }
    }
  }

  function showError(message) {
    const banner = document.getElementById("error-banner");
    if (banner) {
      banner.hidden = false;
      banner.textContent = String(message);
    }
    console.error("athanor console:", message);  // tests listen to console errors
  }

  function clearError() {
    const banner = document.getElementById("error-banner");
    if (banner) { banner.hidden = true; banner.textContent = ""; }
  }

  // Run a page's async loader and show what goes wrong in the banner.
  function guard(fn) {
    return (...args) => Promise.resolve().then(() => fn(...args)).catch((e) => showError(e.message || e));
  }

  function ready(fn) {
    if (started) guard(fn)();
    else waiting.push(fn);
  }

  function start() {
    if (started) return;
    started = true;
    waiting.splice(0).forEach((fn) => guard(fn)());
    document.body.dispatchEvent(new CustomEvent("athanor:ready"));  // htmx parts: hx-trigger="athanor:ready from:body"

  }

  function askKey(message) {
    const dialog = document.getElementById("key-dialog");
    const error = document.getElementById("key-error");
    error.hidden = !message;
    error.textContent = message || "";
    if (!dialog.open) dialog.showModal();
  }

  async function saveKey(event) {
    event.preventDefault();
    const input = document.getElementById("api-key");
    const candidate = input.value.trim();
    if (!candidate) return;
    const response = await fetch("/v1/models", { headers: { Authorization: "Bearer " + candidate } });
    if (!response.ok) {
      askKey(response.status === 401 ? "That key was refused." : "The server answered HTTP " + response.status);
      return;
    }
    localStorage.setItem(KEY_STORE, candidate);
    input.value = "";
    document.getElementById("key-dialog").close();
    start();
  }

  // <tag attrs...>children</tag> without innerHTML: data never becomes markup.
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else if (name === "text") node.textContent = value;
      else node.setAttribute(name, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function bytes(n) {
    if (n === undefined || n === null) return "";
    const units = ["B", "KB", "MB", "GB", "TB"];
    let i = 0;
    while (n >= 1000 && i < units.length - 1) { n /= 1000; i += 1; }
    return (i ? n.toFixed(1) : String(n)) + " " + units[i];
  }

  if (window.htmx) htmx.config.allowEval = false;  // no hx-on / js: expressions: fragments stay plain HTML
  window.addEventListener("error", (e) => showError(e.message || "script error"));
  window.addEventListener("unhandledrejection", (e) => showError((e.reason && e.reason.message) || e.reason));
  document.addEventListener("htmx:configRequest", (e) => Object.assign(e.detail.headers, authHeaders()));
  document.addEventListener("htmx:responseError", (e) => {
    if (e.detail.xhr.status === 401) askKey("The server refused the key.");
    showError(e.detail.pathInfo.requestPath + ": HTTP " + e.detail.xhr.status + " " + e.detail.xhr.responseText.slice(0, 200));
  });
  document.addEventListener("htmx:sendError", (e) => showError("cannot reach the server: " + e.detail.pathInfo.requestPath));
  document.addEventListener("DOMContentLoaded", () => {
    document.getElementById("key-form").addEventListener("submit", guard(saveKey));
    document.getElementById("key-button").addEventListener("click", () => askKey(""));
    if (authRequired() && !key()) askKey("");
    else start();
  });

  return { fetch: apiFetch, json, sse, ready, showError, clearError, guard, el, bytes, key, authHeaders };
})();
