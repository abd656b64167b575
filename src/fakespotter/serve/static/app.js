// fakespotter page: upload a photo, draw a box and score on each face, a verdict, and the
// chosen face's active neurons per layer against the model's averages. A face whose row has
// a warning (outside what the detector was measured on) is flagged on its box and in its
// card. Or upload a short video: a verdict, one line per face track and a timeline of its
// scores. No libraries.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);
let model = null;   // GET /api/model
let rows = [];      // faces of the current photo
let photoUrl = null;
let clipUrl = null;
let latest = 0;     // number of the latest upload: answers to older ones are dropped
const VIDEO_NAME = /\.(mp4|m4v|mov|mkv|webm|avi|mpe?g|wmv|flv)$/i;  // = fakespotter.video
const TRACK_COLORS = ["#0a66c2", "#c62828", "#1b8a3a", "#8e24aa", "#ef6c00", "#00838f",
  "#6d4c41", "#546e7a"];

function svg(tag, attrs, parent) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  if (parent) parent.appendChild(el);
  return el;
}

function percent(p) { return Math.round(p * 100) + "%"; }

// Words for a face's row: its label comes from the model's operating point (threshold and
// uncertain band chosen on validation photos), the strength from its probability.
function verdictWords(row) {
  const p = row.p_fake;
  if (row.label === "uncertain") return "Uncertain (between what the model calls real and fake)";
  if (row.label === "fake") return p >= 0.8 ? "Likely made by a GAN" : "Leaning GAN-made";
  return p > 0.2 ? "Leaning real" : "Likely a real photo";
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
      `, cross-validated AUC ${model.cv_auc.toFixed(3)} on its training data; ` +
      `fake at P(fake) ≥ ${model.threshold.toFixed(3)}` +
      (model.uncertain ? `, uncertain from ${model.uncertain[0].toFixed(3)}.` : ".");
  } catch (e) { model = null; }
}

function isVideo(file) {
  return (file.type || "").startsWith("video/") || VIDEO_NAME.test(file.name);
}

function analyse(file) {
  return isVideo(file) ? detectVideo(file) : detect(file);
}

async function detect(file) {
  const upload = ++latest;
  rows = [];
  $("video-result").hidden = true;
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
    if (upload === latest) setStatus(`Could not score this file: ${e.message}`, true);
    return;
  }
  await loaded;
  if (upload !== latest) return;
  rows = answer.filter((row) => !row.error);
  $("result").hidden = false;
  if (!rows.length) {
    setStatus(answer[0] && answer[0].error ? `No score: ${answer[0].error}.` : "No face found.");
    drawOverlay(-1); $("faces").replaceChildren(); $("verdict").textContent = "";
    $("verdict-warning").hidden = true;
    $("chart-figure").hidden = true;
    return;
  }
  const flagged = rows.filter((row) => row.warning).length;
  setStatus(`${rows.length} face${rows.length > 1 ? "s" : ""} found` + (flagged
    ? `, ${flagged} flagged (outside what the detector was measured on: less certain).`
    : "."));
  const worst = rows.reduce((a, b, i) => (b.p_fake > rows[a].p_fake ? i : a), 0);
  select(worst);
}

function select(i) {
  drawOverlay(i);
  drawList(i);
  const row = rows[i];
  $("verdict").textContent = `Face ${i + 1}: ${verdictWords(row)} — ` +
    `${percent(row.p_fake)} probability of being GAN-made (calibrated).`;
  $("verdict-warning").hidden = !row.warning;
  $("verdict-warning").textContent =
    row.warning ? `\u26a0 Flagged, less certain: ${row.warning}.` : "";
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
      class: `face-box ${row.label}${i === selected ? " selected" : ""}` +
        (row.warning ? " flagged" : "") }, g);
    svg("title", {}, rect).textContent = `face ${i + 1}: p_fake ${row.p_fake.toFixed(3)}` +
      (row.warning ? ` (flagged: ${row.warning})` : "");
    const label = `${i + 1}: ${row.label} ${percent(row.p_fake)}`;
    const ty = y0 > font * 1.4 ? y0 - font * 0.35 : y1 + font * 1.1;
    svg("rect", { x: x0, y: ty - font, width: label.length * font * 0.62, height: font * 1.3,
      class: `tag-bg ${row.label}` }, g);
    const text = svg("text", { x: x0 + font * 0.2, y: ty, class: "face-score",
      "font-size": font }, g);
    text.textContent = label;
    if (row.warning) {  // a "!" badge on the box's top right corner
      const r = font * 0.7, cx = Math.max(x0 + r, x1 - r), cy = y0 + r;
      const mark = svg("g", { class: "flag-mark" }, g);
      svg("circle", { cx, cy, r }, mark);
      svg("text", { x: cx, y: cy + font * 0.35, "text-anchor": "middle", "font-size": font },
        mark).textContent = "!";
      svg("title", {}, mark).textContent = `flagged: ${row.warning}`;
    }
    g.addEventListener("click", () => select(i));
  });
}

function drawList(selected) {
  const list = $("faces");
  list.replaceChildren();
  rows.forEach((row, i) => {
    const li = document.createElement("li");
    li.className = "face-row" + (i === selected ? " selected" : "") +
      (row.warning ? " flagged" : "");
    li.textContent = `${row.label}, p_fake ${row.p_fake.toFixed(3)} — box ` +
      row.box.map((v) => Math.round(v)).join(", ") +
      (row.face_size != null ? `, ${row.face_size} px` : "") +
      (row.detection_score != null ? `, detection ${row.detection_score.toFixed(2)}` : "");
    if (row.warning) {
      const note = document.createElement("span");
      note.className = "face-warning";
      note.textContent = `\u26a0 flagged: ${row.warning}`;
      li.appendChild(note);
    }
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

// ---- videos ----

function videoVerdictWords(p) {
  if (p >= 0.8) return "Likely shows a GAN-made face";
  if (p >= 0.5) return "Leaning GAN-made";
  if (p > 0.2) return "Leaning real";
  return "Likely real faces";
}

function seconds(t) { return `${t.toFixed(1)} s`; }

async function detectVideo(file) {
  const upload = ++latest;
  $("result").hidden = true;
  $("video-result").hidden = true;
  const fps = $("fps").value;
  setStatus(`Sampling ${file.name} (${$("fps").selectedOptions[0].textContent}) and ` +
    "following its faces… a video takes a while.");
  const form = new FormData();
  form.append("video", file, file.name);
  form.append("fps", fps);
  let answer;
  try {
    const r = await fetch("/api/detect-video", { method: "POST", body: form });
    answer = await r.json();
    if (!r.ok) throw new Error(answer.detail || `server answered ${r.status}`);
  } catch (e) {
    if (upload === latest) setStatus(`Could not score this video: ${e.message}`, true);
    return;
  }
  if (upload !== latest) return;
  if (clipUrl) URL.revokeObjectURL(clipUrl);
  clipUrl = URL.createObjectURL(file);
  $("clip").src = clipUrl;  // the browser may not play every codec the server reads
  showVideo(answer);
}

function showVideo(answer) {
  const tracks = answer.tracks, v = answer.video;
  $("video-result").hidden = false;
  let status = `${answer.n_frames} frame${answer.n_frames === 1 ? "" : "s"} sampled, ` +
    `${tracks.length} face${tracks.length === 1 ? "" : "s"} followed.`;
  if (answer.truncated) {
    const seen = answer.times.length ? answer.times[answer.times.length - 1] : 0;
    status += ` Only the first ${seconds(seen)}` +
      (answer.duration ? ` of ${seconds(answer.duration)}` : "") +
      ` were scored (at most ${answer.max_frames} frames per video).`;
  }
  setStatus(status);
  if (!v.label) {
    $("video-verdict").textContent = "No face found in the sampled frames.";
  } else {
    const worst = tracks.reduce((a, b) => (b.mean > a.mean ? b : a));
    $("video-verdict").textContent = `${videoVerdictWords(worst.mean)} — ` +
      `${tracks.length > 1 ? "the most suspicious face, " : ""}face ${worst.track + 1}, ` +
      `averages ${percent(worst.mean)} probability of being GAN-made over ` +
      `${worst.n_frames} sampled frame${worst.n_frames === 1 ? "" : "s"}.`;
  }
  const list = $("tracks");
  list.replaceChildren();
  tracks.forEach((t, i) => {
    const li = document.createElement("li");
    li.className = "track-row " + t.label;
    li.style.borderLeftColor = TRACK_COLORS[i % TRACK_COLORS.length];
    const judged = Math.round(t.fraction_fake * t.n_frames);
    li.textContent = `Face ${t.track + 1}: ${t.label} — mean ${percent(t.mean)}, ` +
      `max ${percent(t.max)}, judged fake in ${judged} of ${t.n_frames} frames ` +
      `(${percent(t.fraction_fake)}), seen ${t.start.toFixed(1)}–${seconds(t.end)}`;
    li.addEventListener("click", () => seek(t.start));
    list.appendChild(li);
  });
  drawTimeline(answer);
}

function seek(t) {
  const clip = $("clip");
  if (clip.readyState > 0) clip.currentTime = t;
}

// Line chart: x = time in the video, y = a face's probability of being GAN-made.
function drawTimeline(answer) {
  const fig = $("timeline-figure"), chart = $("timeline");
  fig.hidden = !answer.tracks.length;
  chart.replaceChildren();
  if (!answer.tracks.length) return;
  const W = 640, H = 240, L = 44, R = 12, T = 26, B = 34;
  const last = answer.times.length ? answer.times[answer.times.length - 1] : 0;
  const end = Math.max(last + 1 / answer.fps, answer.truncated ? 0 : answer.duration || 0);
  const x = (t) => L + (t / end) * (W - L - R);
  const y = (p) => H - B - p * (H - T - B);
  [0, 0.25, 0.5, 0.75, 1].forEach((p) => {
    svg("line", { x1: L, x2: W - R, y1: y(p), y2: y(p), class: "grid" }, chart);
    svg("text", { x: L - 6, y: y(p) + 4, "text-anchor": "end" }, chart).textContent = percent(p);
  });
  // the model's operating point: tracks whose mean reaches it are labelled fake
  const cut = model ? model.threshold : 0.5;
  svg("line", { x1: L, x2: W - R, y1: y(cut), y2: y(cut), class: "threshold" }, chart);
  const step = [0.5, 1, 2, 5, 10, 15, 30, 60, 120].find((s) => end / s <= 8) || 300;
  for (let t = 0; t <= end + 1e-9; t += step) {
    svg("text", { x: x(t), y: H - B + 14, "text-anchor": "middle" }, chart).textContent =
      Number.isInteger(t) ? `${t}` : t.toFixed(1);
  }
  svg("text", { x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle" }, chart).textContent =
    "time (s)";
  answer.tracks.forEach((t, i) => {
    const color = TRACK_COLORS[i % TRACK_COLORS.length];
    const points = t.times.map((s, k) => `${x(s).toFixed(1)},${y(t.p_fake[k]).toFixed(1)}`);
    svg("polyline", { points: points.join(" "), fill: "none", stroke: color, "stroke-width": 2,
      class: "track-line" }, chart);
    t.times.forEach((s, k) => {
      const dot = svg("circle", { cx: x(s), cy: y(t.p_fake[k]), r: 3, fill: color,
        class: "track-point" }, chart);
      svg("title", {}, dot).textContent =
        `face ${t.track + 1} at ${seconds(s)}: p_fake ${t.p_fake[k].toFixed(3)}`;
      dot.addEventListener("click", () => seek(s));
    });
    if (i < 4) {  // a legend for the first faces; the list names them all
      const lx = L + i * 140;
      svg("line", { x1: lx, x2: lx + 18, y1: 12, y2: 12, stroke: color, "stroke-width": 2 },
        chart);
      svg("text", { x: lx + 22, y: 16 }, chart).textContent =
        `face ${t.track + 1} (mean ${percent(t.mean)})`;
    }
  });
}

function wireDropZone() {
  const drop = $("drop"), input = $("file");
  input.addEventListener("change", () => { if (input.files[0]) analyse(input.files[0]); });
  ["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => {
    e.preventDefault(); drop.classList.add("over");
  }));
  ["dragleave", "drop"].forEach((t) => drop.addEventListener(t, (e) => {
    e.preventDefault(); drop.classList.remove("over");
  }));
  drop.addEventListener("drop", (e) => {
    const file = e.dataTransfer.files[0];
    if (file) analyse(file);
  });
}

wireDropZone();
loadModel();
