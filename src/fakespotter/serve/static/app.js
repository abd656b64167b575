// fakespotter page: upload a photo, draw a box and score on each face, a verdict, and the
// chosen face's active neurons per layer against the model's averages. No libraries.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);
let model = null;   // GET /api/model
let rows = [];      // faces of the current photo
let photoUrl = null;

function svg(tag, attrs, parent) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  if (parent) parent.appendChild(el);
  return el;
}

function percent(p) { return Math.round(p * 100) + "%"; }

function verdictWords(p) {
  if (p >= 0.8) return "Likely made by a GAN";
  if (p >= 0.5) return "Leaning GAN-made";
  if (p > 0.2) return "Leaning real";
  return "Likely a real photo";
}

function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").classList.toggle("error", !!isError);
}

async function loadModel() {
  try {
    const r = await fetch("/api/model");
    model = await r.json();
    $("model-line").textContent = `Model: ${model.backbone} backbone, ${model.variant} features` +
      (model.aligned ? ", expects aligned face crops" : "") +
      `, cross-validated AUC ${model.cv_auc.toFixed(3)} on its training data.`;
  } catch (e) { model = null; }
}

async function detect(file) {
  rows = [];
  if (photoUrl) URL.revokeObjectURL(photoUrl);
  photoUrl = URL.createObjectURL(file);
  const img = $("photo");
  const loaded = new Promise((ok) => { img.onload = ok; img.onerror = ok; });
  img.src = photoUrl;
  $("result").hidden = true;
  setStatus(`Looking for faces in ${file.name}…`);
  const form = new FormData();
  form.append("image", file, file.name);
  let answer;
  try {
    const r = await fetch("/api/detect", { method: "POST", body: form });
    answer = await r.json();
    if (!r.ok) throw new Error(answer.detail || `server answered ${r.status}`);
  } catch (e) {
    setStatus(`Could not score this file: ${e.message}`, true);
    return;
  }
  await loaded;
  rows = answer.filter((row) => !row.error);
  $("result").hidden = false;
  if (!rows.length) {
    setStatus(answer[0] && answer[0].error ? `No score: ${answer[0].error}.` : "No face found.");
    drawOverlay(-1); $("faces").replaceChildren(); $("verdict").textContent = "";
    $("chart-figure").hidden = true;
    return;
  }
  setStatus(`${rows.length} face${rows.length > 1 ? "s" : ""} found.`);
  const worst = rows.reduce((a, b, i) => (b.p_fake > rows[a].p_fake ? i : a), 0);
  select(worst);
}

function select(i) {
  drawOverlay(i);
  drawList(i);
  const row = rows[i];
  $("verdict").textContent = `Face ${i + 1}: ${verdictWords(row.p_fake)} — ` +
    `${percent(row.p_fake)} probability of being GAN-made (calibrated).`;
  drawChart(row, i);
}

function drawOverlay(selected) {
  const img = $("photo"), overlay = $("overlay");
  const w = img.naturalWidth || 1, h = img.naturalHeight || 1;
  overlay.setAttribute("viewBox", `0 0 ${w} ${h}`);
  overlay.replaceChildren();
  const font = Math.max(12, Math.round(Math.max(w, h) / 30));
  rows.forEach((row, i) => {
    const [x0, y0, x1, y1] = row.box;
    const g = svg("g", { "data-face": i }, overlay);
    const rect = svg("rect", { x: x0, y: y0, width: x1 - x0, height: y1 - y0,
      class: `face-box ${row.label}${i === selected ? " selected" : ""}` }, g);
    svg("title", {}, rect).textContent = `face ${i + 1}: p_fake ${row.p_fake.toFixed(3)}`;
    const label = `${i + 1}: ${row.label} ${percent(row.p_fake)}`;
    const ty = y0 > font * 1.4 ? y0 - font * 0.35 : y1 + font * 1.1;
    svg("rect", { x: x0, y: ty - font, width: label.length * font * 0.62, height: font * 1.3,
      class: `tag-bg ${row.label}` }, g);
    const text = svg("text", { x: x0 + font * 0.2, y: ty, class: "face-score",
      "font-size": font }, g);
    text.textContent = label;
    g.addEventListener("click", () => select(i));
  });
}

function drawList(selected) {
  const list = $("faces");
  list.replaceChildren();
  rows.forEach((row, i) => {
    const li = document.createElement("li");
    li.className = "face-row" + (i === selected ? " selected" : "");
    li.textContent = `${row.label}, p_fake ${row.p_fake.toFixed(3)} — box ` +
      row.box.map((v) => Math.round(v)).join(", ");
    li.addEventListener("click", () => select(i));
    list.appendChild(li);
  });
}

// Line chart: x = layer (input to output), y = share of the layer's neurons above threshold.
function drawChart(row, i) {
  const fig = $("chart-figure"), chart = $("chart");
  if (!row.layer_counts || !model || !model.neurons) { fig.hidden = true; return; }
  fig.hidden = false;
  $("chart-face").textContent = `face ${i + 1}`;
  chart.replaceChildren();
  const share = (values) => values && values.map((v, k) => v / model.neurons[k]);
  const series = [
    { name: `face ${i + 1}`, values: share(row.layer_counts), color: "#0a66c2", dash: "" },
    { name: "real average", values: share(model.real_mean), color: "#1b8a3a", dash: "6 4" },
    { name: "fake average", values: share(model.fake_mean), color: "#c62828", dash: "6 4" },
  ];
  if (!model.real_mean) {
    series.push({ name: "training average (real and fake)", values: share(model.training_mean),
      color: "#888", dash: "2 3" });
  }
  const shown = series.filter((s) => s.values);
  const W = 640, H = 260, L = 48, R = 10, T = 28, B = 34;
  const n = row.layer_counts.length;
  // y axis from the tenth below the lowest value to the tenth above the highest: the
  // differences between a face and the averages are a few percent
  const all = shown.flatMap((s) => s.values);
  const bottom = Math.max(0, Math.floor(Math.min(...all) * 10) / 10);
  const top = Math.max(bottom + 0.1, Math.min(1, Math.ceil(Math.max(...all) * 10) / 10));
  const x = (k) => L + (n > 1 ? (k * (W - L - R)) / (n - 1) : (W - L - R) / 2);
  const y = (v) => H - B - ((v - bottom) / (top - bottom)) * (H - T - B);
  for (let t = 0; t <= 4; t++) {
    const v = bottom + ((top - bottom) * t) / 4;
    svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: "#eee" }, chart);
    svg("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, chart).textContent = percent(v);
  }
  svg("text", { x: (L + W - R) / 2, y: H - 6, "text-anchor": "middle" }, chart).textContent =
    `layer (${n} layers, input → output)`;
  shown.forEach((s, si) => {
    const points = s.values.map((v, k) => `${x(k).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    svg("polyline", { points, fill: "none", stroke: s.color, "stroke-width": si === 0 ? 2 : 1.5,
      "stroke-dasharray": s.dash }, chart);
    const lx = L + si * 150;
    svg("line", { x1: lx, x2: lx + 22, y1: 12, y2: 12, stroke: s.color, "stroke-width": 2,
      "stroke-dasharray": s.dash }, chart);
    svg("text", { x: lx + 26, y: 16 }, chart).textContent = s.name;
  });
  row.layer_counts.forEach((c, k) => {
    const dot = svg("circle", { cx: x(k), cy: y(c / model.neurons[k]), r: 2.5, fill: "#0a66c2",
      class: "layer-point" }, chart);
    svg("title", {}, dot).textContent =
      `${model.layers[k]}: ${Math.round(c)} of ${model.neurons[k]} neurons active`;
  });
}

function wireDropZone() {
  const drop = $("drop"), input = $("file");
  input.addEventListener("change", () => { if (input.files[0]) detect(input.files[0]); });
  ["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => {
    e.preventDefault(); drop.classList.add("over");
  }));
  ["dragleave", "drop"].forEach((t) => drop.addEventListener(t, (e) => {
    e.preventDefault(); drop.classList.remove("over");
  }));
  drop.addEventListener("drop", (e) => {
    const file = e.dataTransfer.files[0];
    if (file) detect(file);
  });
}

wireDropZone();
loadModel();
