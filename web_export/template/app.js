// Korean emotion classifier page: @huggingface/tokenizers for ids, onnxruntime-web (wasm) for logits.
// Everything is served from this folder (no CDN). User text is only ever set with textContent.
import * as ort from "./vendor/ort/ort.wasm.min.mjs";
import { Tokenizer } from "./vendor/tokenizers/tokenizers.min.mjs";

const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);
// bundle.ready: a Promise that resolves once the model can run ({ labels, max_length, threads })
// and rejects with the load error; bundle.loaded / bundle.error say the same synchronously.
// classify() and logits() wait on it, so automation may call them as soon as the page starts.
let settle;
const ready = new Promise((resolve, reject) => { settle = { resolve, reject }; });
ready.catch(() => {}); // a load error is shown on the page; no "unhandled rejection" on top
const state = { ready, loaded: false, error: null, threads: 1,
                isolated: window.crossOriginIsolated };
window.bundle = state;

// Cross-origin isolation (needed for multi-threaded wasm, see
// https://onnxruntime.ai/docs/tutorials/web/env-flags-and-session-options.html#envwasmnumthreads):
// where the host cannot send COOP/COEP headers, sw.js adds them; the page must reload once for the
// new headers to apply. The sessionStorage flag stops a reload loop where isolation cannot work
// (e.g. inside a non-isolated parent frame). ?sw=0 turns this off.
async function ensureIsolation() {
  if (window.crossOriginIsolated || params.get("sw") === "0") return true;
  if (!("serviceWorker" in navigator) || !window.isSecureContext) return true;
  // Inside a frame (e.g. the studio's preview) isolation also needs the parent page: no use trying.
  if (window.top !== window) return true;
  // A blocked or broken registration may never settle: give up after 3 s and run single-threaded.
  const timeout = new Promise((_, reject) =>
    setTimeout(() => reject(new Error("service worker timed out")), 3000));
  try {
    await Promise.race([
      navigator.serviceWorker.register("sw.js").then(() => navigator.serviceWorker.ready),
      timeout]);
  } catch (err) {
    console.warn("service worker not available:", err);
    return true;
  }
  if (sessionStorage.getItem("coi-reloaded")) return true;
  sessionStorage.setItem("coi-reloaded", "1");
  location.reload();
  return false;
}

async function fetchJson(path) {
  const res = await fetch(path);
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
  return res.json();
}

async function fetchBytes(path) {
  const res = await fetch(path);
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
  return new Uint8Array(await res.arrayBuffer());
}

// Same ids as the Python tokenizer with truncation=True. @huggingface/tokenizers ignores the
// truncation in tokenizer.json (shared stack notes), so cut by hand: keep the first
// max_length - k ids and the k special tokens the post-processor appends (</s> for XLM-R).
function encode(text) {
  const ids = state.tokenizer.encode(text).ids;
  const max = state.facts.max_length;
  const keep = state.facts.end_special_tokens;
  if (ids.length <= max) return ids;
  return ids.slice(0, max - keep).concat(ids.slice(ids.length - keep));
}

function feeds(ids) {
  const n = ids.length;
  const make = (data) => new ort.Tensor("int64", data, [1, n]);
  const out = {};
  for (const name of state.session.inputNames) {
    if (name === "input_ids") out[name] = make(BigInt64Array.from(ids, (v) => BigInt(v)));
    else if (name === "attention_mask") out[name] = make(new BigInt64Array(n).fill(1n));
    else if (name === "token_type_ids") out[name] = make(new BigInt64Array(n));
    else throw new Error(`the model wants an input this page does not know: ${name}`);
  }
  return out;
}

// One run at a time: a wasm session must not be entered twice concurrently. A call made while the
// model loads waits for it (and rejects with the load error if loading fails).
let queue = Promise.resolve();
function logits(text) {
  const job = queue.then(() => ready).then(async () => {
    const result = await state.session.run(feeds(encode(text)));
    return Array.from(result[state.session.outputNames[0]].data);
  });
  queue = job.catch(() => {});
  return job;
}

function softmax(xs) {
  const top = Math.max(...xs);
  const exps = xs.map((x) => Math.exp(x - top));
  const sum = exps.reduce((a, b) => a + b, 0);
  return exps.map((e) => e / sum);
}

async function classify(text) {
  await ready;
  const t0 = performance.now();
  const probs = softmax(await logits(String(text)));
  const ms = performance.now() - t0;
  const labels = state.facts.labels;
  const scores = Object.fromEntries(labels.map((label, i) => [label, probs[i]]));
  const best = probs.indexOf(Math.max(...probs));
  const result = { label: labels[best], scores, ms };
  render(String(text), result);
  return result;
}

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

function render(text, result) {
  $("result").hidden = false;
  $("label").textContent = result.label;
  $("time").textContent = `${result.ms.toFixed(1)} ms`;
  const bars = $("bars");
  bars.replaceChildren();
  for (const [label, p] of Object.entries(result.scores)) {
    const row = el("div", undefined, label === result.label ? "bar best" : "bar");
    row.dataset.label = label;
    const track = el("div", undefined, "track");
    const fill = el("div", undefined, "fill");
    fill.style.width = `${(p * 100).toFixed(1)}%`;
    track.append(fill);
    row.append(el("span", label, "name"), track, el("span", `${(p * 100).toFixed(1)}%`, "pct"));
    bars.append(row);
  }
  const tr = el("tr");
  tr.append(el("td", text, "text"), el("td", result.label), el("td", result.ms.toFixed(1)));
  const body = $("history").tBodies[0];
  body.prepend(tr);
  while (body.rows.length > 20) body.deleteRow(-1);
}

function renderFacts() {
  const f = state.facts;
  const rows = [
    ["Model", `${f.model_mb.toFixed(1)} MB (INT8 ONNX)`],
    ["Labels", f.labels.join(", ")],
    ["Max length", `${f.max_length} tokens`],
    ["Threads", `${state.threads}${state.isolated ? "" : " (page is not cross-origin isolated)"}`],
    ["Runtime", `onnxruntime-web ${ort.env.versions.web} (wasm)`],
    ["Loaded in", `${state.loadMs.toFixed(0)} ms`],
  ];
  const dl = $("facts");
  dl.replaceChildren();
  for (const [k, v] of rows) dl.append(el("dt", k), el("dd", v));
  dl.dataset.threads = String(state.threads);
  if (f.title) { $("title").textContent = f.title; document.title = f.title; }
}

function renderExamples() {
  const box = $("examples");
  for (const ex of state.facts.examples) {
    const chip = el("button", ex.text, "chip");
    chip.type = "button";
    chip.addEventListener("click", () => { $("text").value = ex.text; predictFromBox(); });
    box.append(chip);
  }
}

async function predictFromBox() {
  const text = $("text").value;
  if (!text.trim()) return;
  try {
    await classify(text);
    $("status").textContent = "";
  } catch (err) {
    $("status").textContent = `Error: ${err.message}`;
  }
}

async function main() {
  if (!(await ensureIsolation())) return;
  state.isolated = window.crossOriginIsolated;
  const wanted = Number(params.get("threads")) || Math.min(4, navigator.hardwareConcurrency || 1);
  ort.env.wasm.numThreads = state.isolated ? wanted : 1;
  ort.env.wasm.wasmPaths = new URL("vendor/ort/", location.href).href;
  const [facts, tokJson, tokConfig, model] = await Promise.all([
    fetchJson("model_facts.json"), fetchJson("tokenizer.json"),
    fetchJson("tokenizer_config.json"), fetchBytes("onnx/model_quantized.onnx")]);
  state.facts = facts;
  state.tokenizer = new Tokenizer(tokJson, tokConfig);
  state.session = await ort.InferenceSession.create(model, { executionProviders: ["wasm"] });
  state.threads = ort.env.wasm.numThreads; // ORT resets it to 1 when isolation is missing
  state.loadMs = performance.now();
  state.loaded = true;
  settle.resolve({ labels: facts.labels, max_length: facts.max_length, threads: state.threads });
  renderFacts();
  renderExamples();
  $("predict").disabled = false;
  $("status").textContent = "";
  if (facts.examples.length) {
    $("text").value = facts.examples[0].text;
    await predictFromBox();
    state.firstPredictionMs = performance.now(); // since navigation start
  }
}

window.classify = classify;
state.encode = (text) => { // synchronous, for tests: only once bundle.ready has resolved
  if (!state.loaded) throw new Error(state.error || "not loaded yet: await window.bundle.ready");
  return encode(text);
};
state.logits = logits;
$("predict").addEventListener("click", predictFromBox);
$("text").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) predictFromBox();
});
main().catch((err) => {
  state.error = String(err && err.message ? err.message : err);
  $("status").textContent = `Could not load the model: ${state.error}`;
  console.error(err);
  settle.reject(err instanceof Error ? err : new Error(state.error));
});
