// fakespotter page: upload a photo, draw a box and score on each face, a verdict, and what
// moved the chosen face's score (each layer's part of the classifier's decision). A face whose
// row has a warning (outside what the detector was measured on) is flagged on its box and in
// its card. Or upload a short video: a verdict, one line per face track and a timeline of its
// scores. Faces and tracks carry the numbers of the JSON (from 0). No libraries.
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
// warnings after which the score says nothing (the rest say "measured less well")
const CANT_TELL = /unlike the faces the model was trained on|does not look like a face/;
const TAG_FONT_PX = 14;  // face tags' text size on screen, whatever the photo's resolution

function svg(tag, attrs, parent) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  if (parent) parent.appendChild(el);
  return el;
}

function percent(p) { return Math.round(p * 100) + "%"; }

// The reason a face's score cannot be read, e.g. "unlike the faces the model was trained
// on" (its warning up to the measured numbers), or null.
function cantTell(row) {
  const found = (row.warning || "").split("; ").find((w) => CANT_TELL.test(w));
  return found ? found.split(" (")[0] : null;
}

// Words for a face's row: its label comes from the model's operating point (threshold and
// uncertain band chosen on held-out photos), the strength from its probability.
function verdictWords(row) {
  const p = row.p_fake;
  if (row.label === "uncertain") return "Uncertain";
  if (row.label === "fake") return p >= 0.8 ? "Likely made by a GAN" : "Leaning GAN-made";
  return p > 0.2 ? "Leaning real" : "Likely a real photo";
}

// Why a face is uncertain: where its score lies against the model's operating point.
function uncertainWhy(row) {
  if (row.label !== "uncertain") return "";
  const cut = model ? `the ${percent(model.threshold)} from which this model calls a face ` +
    "fake, a threshold set on held-out photos to keep false alarms on real photos rare"
    : "the score from which this model calls a face fake";
  return row.p_fake >= 0.5 ? `More likely GAN-made than not, but under ${cut}.`
    : "Less likely GAN-made than not, but too close to call it real.";
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
    $("verdict-warning").hidden = true; $("verdict-note").hidden = true;
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
  const row = rows[i], reason = cantTell(row);
  // a face unlike the training faces: that comes first, its number second
  $("verdict").textContent = reason
    ? `Face ${row.face}: Can't tell: ${reason}. Its score, ${percent(row.p_fake)} ` +
      "probability of being GAN-made, says little about such a face."
    : `Face ${row.face}: ${verdictWords(row)} — ` +
      `${percent(row.p_fake)} probability of being GAN-made (calibrated).`;
  $("verdict-note").textContent = reason ? "" : uncertainWhy(row);
  $("verdict-note").hidden = !$("verdict-note").textContent;
  $("verdict-warning").hidden = !row.warning;
  $("verdict-warning").textContent =
    row.warning ? `\u26a0 Flagged, less certain: ${row.warning}.` : "";
  drawChart(row);
}

// A face's tag on the photo: the JSON's face number, the label (or "can't tell") and score.
function tagTexts(row) {
  const reason = cantTell(row);
  return reason
    ? [`${row.face}: can't tell`, `${row.face}: ?`]
    : [`${row.face}: ${row.label} ${percent(row.p_fake)}`, `${row.face}: ${percent(row.p_fake)}`];
}

function overlap(a, b) {
  const w = Math.min(a.x + a.w, b.x + b.w) - Math.max(a.x, b.x);
  const h = Math.min(a.y + a.h, b.y + b.h) - Math.max(a.y, b.y);
  return w > 0 && h > 0 ? w * h : 0;
}

// Where a tag of w x h goes: above its box, below it or inside its top, slid to stay in the
// photo: the spot that covers the least of the tags placed before, then of other faces.
function placeTag(box, w, h, W, H, placed, boxes) {
  const [x0, y0, x1, y1] = box;
  const x = Math.min(Math.max(0, x0), Math.max(0, W - w));
  const spots = [y0 - h, y1, y0, y1 - h].map((y) => ({
    x, y: Math.min(Math.max(0, y), Math.max(0, H - h)), w, h }));
  let best = null;
  for (const s of spots) {
    const onTags = placed.reduce((sum, t) => sum + overlap(s, t), 0);
    const onFaces = boxes.reduce((sum, b) => sum + (b === box ? 0 : overlap(s,
      { x: b[0], y: b[1], w: b[2] - b[0], h: b[3] - b[1] })), 0);
    const cost = onTags * 1e6 + onFaces;
    if (!best || cost < best.cost) best = { ...s, cost, onTags };
  }
  return best;
}

function drawOverlay(selected) {
  const img = $("photo"), overlay = $("overlay");
  const W = img.naturalWidth || 1, H = img.naturalHeight || 1;
  overlay.setAttribute("viewBox", `0 0 ${W} ${H}`);
  overlay.replaceChildren();
  // photo pixels per screen pixel: the tags keep one size on screen
  const font = TAG_FONT_PX * W / (img.clientWidth || Math.min(W, 560));
  const pad = font * 0.25, h = font * 1.3;
  const placed = [], boxes = rows.map((row) => row.box);
  rows.forEach((row, i) => {
    const [x0, y0, x1, y1] = row.box;
    const g = svg("g", { "data-face": row.face }, overlay);
    const kind = (row.warning ? " flagged" : "") + (cantTell(row) ? " cant-tell" : "");
    const rect = svg("rect", { x: x0, y: y0, width: x1 - x0, height: y1 - y0,
      class: `face-box ${row.label}${i === selected ? " selected" : ""}${kind}` }, g);
    svg("title", {}, rect).textContent = `face ${row.face}: p_fake ${row.p_fake.toFixed(3)}` +
      (row.warning ? ` (flagged: ${row.warning})` : "");
    const bg = svg("rect", { class: `tag-bg ${cantTell(row) ? "cant-tell" : row.label}` }, g);
    const text = svg("text", { class: "face-score", "font-size": font }, g);
    let spot = null;
    for (const words of tagTexts(row)) {  // the full tag, or the short one where it collides
      text.textContent = words;
      const width = (text.getComputedTextLength() || words.length * font * 0.62) + 2 * pad;
      spot = placeTag(row.box, width, h, W, H, placed, boxes);
      if (!spot.onTags) break;
    }
    placed.push(spot);
    for (const [k, v] of Object.entries({ x: spot.x, y: spot.y, width: spot.w, height: h })) {
      bg.setAttribute(k, v);
    }
    text.setAttribute("x", spot.x + pad);
    text.setAttribute("y", spot.y + font * 1.0);
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
    li.textContent = `Face ${row.face}: ${row.label}, p_fake ${row.p_fake.toFixed(3)} — box ` +
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

// What moved this face's score: x = layer (input to output), a bar per layer = its part of
// the classifier's decision (up: towards GAN-made, down: towards real; 0 = the average
// training face), beside the spread of the real and the fake training faces where the model
// file has it.
function drawChart(row) {
  const fig = $("chart-figure"), chart = $("chart");
  const parts = row.layer_decision;
  if (!parts || !parts.length || !model || !model.layers) { fig.hidden = true; return; }
  fig.hidden = false;
  $("chart-face").textContent = `face ${row.face}`;
  chart.replaceChildren();
  const n = parts.length, names = model.layers;
  const real = model.decision_real, fake = model.decision_fake;
  const ranges = real && fake && real.length === n && fake.length === n;
  const W = 640, H = 280, L = 84, R = 10, T = 30, B = 30;
  const all = parts.map(Math.abs).concat(ranges ? [...real, ...fake].flat().map(Math.abs) : []);
  const m = Math.max(...all, 1e-9) * 1.05;
  const mid = T + (H - T - B) / 2, half = (H - T - B) / 2;
  const step = (W - L - R) / n;
  const x = (k) => L + step * (k + 0.5);
  const y = (v) => mid - (v / m) * half;
  svg("line", { x1: L, x2: W - R, y1: mid, y2: mid, class: "zero" }, chart);
  svg("text", { x: L - 6, y: T + 10, "text-anchor": "end", class: "towards-fake" }, chart)
    .textContent = "↑ GAN-made";
  svg("text", { x: L - 6, y: H - B - 2, "text-anchor": "end", class: "towards-real" }, chart)
    .textContent = "↓ real";
  svg("text", { x: L - 6, y: mid + 4, "text-anchor": "end" }, chart).textContent = "average";
  svg("text", { x: L, y: H - 10 }, chart).textContent = "input";
  svg("text", { x: W - R, y: H - 10, "text-anchor": "end" }, chart).textContent = "output";
  svg("text", { x: (L + W - R) / 2, y: H - 10, "text-anchor": "middle" }, chart).textContent =
    `layer (${n} layers)`;
  const total = parts.reduce((a, v) => a + Math.abs(v), 0) || 1;
  const legend = [["bar-fake", "this face: towards GAN-made"], ["bar-real", "towards real"]];
  if (ranges) legend.push(["range-real", "real faces (10–90%)"], ["range-fake", "fake faces"]);
  let lx = L;
  legend.forEach(([cls, words]) => {
    svg("rect", { x: lx, y: 6, width: 12, height: 12, class: cls }, chart);
    const text = svg("text", { x: lx + 16, y: 16 }, chart);
    text.textContent = words;
    lx += 16 + (text.getComputedTextLength() || words.length * 6) + 18;
  });
  const bw = Math.max(2, step * (ranges ? 0.5 : 0.7));
  parts.forEach((v, k) => {
    if (ranges) {  // the middle 80% of the training faces: real left of the bar, fake right
      [[real[k], "range-real", -1], [fake[k], "range-fake", 1]].forEach(([[lo, hi], cls, side]) => {
        const rx = x(k) + side * (bw / 2 + 2.5);
        svg("line", { x1: rx, x2: rx, y1: y(lo), y2: y(hi), class: cls }, chart);
      });
    }
    const bar = svg("rect", { x: x(k) - bw / 2, y: Math.min(y(v), mid), width: bw,
      height: Math.max(0.5, Math.abs(y(v) - mid)),
      class: `layer-bar ${v >= 0 ? "bar-fake" : "bar-real"}` }, chart);
    const counts = row.layer_counts && model.neurons
      ? `; ${Math.round(row.layer_counts[k])} of ${model.neurons[k]} neurons active` : "";
    svg("title", {}, bar).textContent = `${names[k]}: towards ${v >= 0 ? "GAN-made" : "real"}, ` +
      `${percent(Math.abs(v) / total)} of this face's push (${v.toFixed(3)})` + counts;
  });
  $("chart-summary").textContent = chartSummary(row, parts, names, total);
}

// In words: from the average training face's score to this face's, the layers that pushed
// hardest each way (the way the layers push overall first).
function chartSummary(row, parts, names, total) {
  const order = parts.map((v, k) => k).sort((a, b) => Math.abs(parts[b]) - Math.abs(parts[a]));
  const top = (sign) => order.filter((k) => Math.sign(parts[k]) === sign).slice(0, 2);
  const shares = (ks) => ks.map((k) => percent(Math.abs(parts[k]) / total)).join(" and ");
  const named = (ks) => ks.map((k) => names[k]).join(" and ");
  const net = parts.reduce((a, v) => a + v, 0) >= 0 ? 1 : -1;
  const way = (sign) => (sign > 0 ? "GAN-made" : "real");
  const [main, other] = [top(net), top(-net)];
  if (!main.length) return "";
  const base = model.average_p_fake;
  const start = base == null ? "Compared with the average training face, the layers push"
    : `The average training face scores ${percent(base)}; this face's layers push it`;
  return `${start} towards ${way(net)}` +
    (base == null ? "" : ` (to ${percent(row.p_fake)})`) +
    `, most of all ${named(main)} (${shares(main)} of all the push)` +
    (other.length ? `; towards ${way(-net)}: ${named(other)} (${shares(other)}).` : ".");
}

// ---- videos ----

// Words for a track: its label (the model's operating point over its frames), then its mean.
function videoVerdictWords(track) {
  const p = track.mean;
  if (track.label === "fake") return p >= 0.8 ? "Likely shows a GAN-made face" : "Leaning GAN-made";
  if (track.label === "uncertain") return "Uncertain: between what the model calls real and fake";
  return p > 0.2 ? "Leaning real" : "Likely real faces";
}

const LABEL_RANK = { fake: 2, uncertain: 1, real: 0 };

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
    const rank = (t) => [LABEL_RANK[t.label] || 0, t.mean];
    const worst = tracks.reduce((a, b) => {
      const [ra, ma] = rank(a), [rb, mb] = rank(b);
      return rb > ra || (rb === ra && mb > ma) ? b : a;
    });
    $("video-verdict").textContent = `${videoVerdictWords(worst)} — ` +
      `${tracks.length > 1 ? "the most suspicious face, " : ""}face ${worst.track}, ` +
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
    li.textContent = `Face ${t.track}: ${t.label} — mean ${percent(t.mean)}, ` +
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
  // the model's operating point: tracks whose mean reaches it are labelled fake, those in
  // its uncertain band (shaded) uncertain; the caption says where they are
  const cut = model ? model.threshold : 0.5;
  const band = model && model.uncertain;
  if (band) {
    svg("rect", { x: L, width: W - L - R, y: y(cut), height: Math.max(0, y(band[0]) - y(cut)),
      class: "uncertain-band" }, chart);
  }
  svg("line", { x1: L, x2: W - R, y1: y(cut), y2: y(cut), class: "threshold" }, chart);
  $("timeline-cut").textContent = `dashed: ${percent(cut)}, the model's threshold: a face ` +
    "seen in two frames or more whose scores average at least this is labelled fake" +
    (band ? `; shaded: uncertain, from ${percent(band[0])}` : "");
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
        `face ${t.track} at ${seconds(s)}: p_fake ${t.p_fake[k].toFixed(3)}`;
      dot.addEventListener("click", () => seek(s));
    });
    if (i < 4) {  // a legend for the first faces; the list names them all
      const lx = L + i * 140;
      svg("line", { x1: lx, x2: lx + 18, y1: 12, y2: 12, stroke: color, "stroke-width": 2 },
        chart);
      svg("text", { x: lx + 22, y: 16 }, chart).textContent =
        `face ${t.track} (mean ${percent(t.mean)})`;
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
