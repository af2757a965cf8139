// The demo page: a client of the public /v1 API in plain JavaScript (no build step, no library),
// so that it doubles as a worked example of the endpoints. URLs are relative to the page.
"use strict";

// mmdet's demo draws boxes scoring 0.3 and up; the model's own 0.02 (its test_cfg, for AP) keeps
// dozens of faint ones.
const DETECT_SCORE = 0.3;

const ENDPOINTS = {
  classification: "v1/classify",
  segmentation: "v1/segment?format=json", // the classes, plus the mask as a base64 palette PNG
  // No boxes: the service's detector finds the people, or without one the whole image is one person.
  pose: "v1/pose",
  detection: `v1/detect?score_threshold=${DETECT_SCORE}`,
};

const $ = (id) => document.getElementById(id);
const KEY_STORAGE = "mnv2-demo-api-key"; // sessionStorage: the key is forgotten with the tab

const state = {
  models: [], // GET /v1/models
  cards: new Map(), // name → GET /v1/models/{name}, fetched once for the weights' note
  file: null, // the chosen File, sent as it is
  picture: null, // the same file decoded by the browser (null when it cannot): the canvas background
  run: 0, // id of the newest request; an older answer that arrives late is dropped
  redraw: () => {}, // paints the current answer onto the canvas
  hover: null, // (x, y) in image pixels → text for the tooltip, or null
};

function el(tag, className = "", text = undefined) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

const percent = (share) => `${(share * 100).toFixed(share < 0.1 ? 2 : 1)} %`;
const SHOWN_SHARE = 0.00005; // below this a share prints as "0.00 %": counted, not listed
/** A pixel coordinate, rounded; never "-0". */
const pixel = (value) => `${Math.round(value) || 0}`;
const ms = (value) => `${value.toFixed(1)} ms`;

// -- talking to the API ---------------------------------------------------------------------------

/** A non-2xx answer; the service's errors are `{"error": {"code", "message"}}`. */
class ApiError extends Error {
  constructor(status, body, requestId) {
    const error = body?.error ?? { code: "error", message: String(body).slice(0, 500) };
    super(error.message);
    this.status = status;
    this.requestId = requestId; // what the service's log line of this request carries
    this.code = error.code;
    this.body = body;
  }
}

async function api(url, options = {}) {
  const key = $("key").value.trim();
  const headers = key ? { Authorization: `Bearer ${key}` } : {};
  const response = await fetch(url, { ...options, headers });
  const text = await response.text();
  let body = text;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON (a proxy's error page, say): keep the text for the error box
  }
  if (!response.ok || typeof body !== "object") {
    if (response.status === 401) $("key-field").hidden = false; // API_KEYS is set: ask for one
    throw new ApiError(response.status, body, response.headers.get("X-Request-ID"));
  }
  return body;
}

async function loadModels() {
  try {
    state.models = (await api("v1/models")).models;
  } catch (error) {
    showError(error, "GET v1/models");
  }
  showFailedModels();
  fillModels();
}

/** Every model that failed to load, with the reason /v1/models gives (its task is unknown). */
function showFailedModels() {
  const failed = state.models.filter((m) => m.state === "failed");
  const box = $("failed");
  box.replaceChildren();
  box.hidden = !failed.length;
  if (!failed.length) return;
  box.append(el("strong", "", `${failed.length} model${failed.length > 1 ? "s" : ""} failed to load`));
  const list = el("ul");
  for (const model of failed) {
    const item = el("li");
    item.append(el("code", "name", model.name), document.createTextNode(`: ${model.reason ?? "no reason given"}`));
    item.append(el("div", "path", model.path));
    list.append(item);
  }
  box.append(list);
}

/** The weights' banner: unless they are released ones (OpenMMLab's, torchvision's), say what
 * the model really knows, from its card's own note. */
async function showWeightsBanner(model) {
  const banner = $("weights-banner");
  banner.hidden = true;
  if (!model || model.state !== "ready" || ["openmmlab", "torchvision"].includes(model.weights)) return;
  let card = state.cards.get(model.name);
  if (!card) {
    try {
      card = await api(`v1/models/${encodeURIComponent(model.name)}`);
    } catch {
      card = { weights: { source: model.weights, note: "" } }; // the list's word is enough
    }
    state.cards.set(model.name, card);
  }
  if (selectedModel()?.name !== model.name) return; // another model was picked meanwhile
  const what =
    card.weights.source === "random-init"
      ? "Random weights: the answers are noise, not a bug."
      : `Not released weights (${card.weights.source}, trained on ${card.weights.trained_on ?? "?"}): ` +
        "it knows what it was trained on, not ImageNet, Cityscapes or real people.";
  banner.replaceChildren(el("strong", "", what));
  if (card.weights.note) banner.append(el("span", "", ` ${card.weights.note}.`));
  banner.append(el("span", "", " For real models, see README → Real weights."));
  banner.hidden = false;
}

// -- controls --------------------------------------------------------------------------------------

function selectedModel() {
  return state.models.find((m) => m.name === $("model").value);
}

/** The task's models, its default selected; those not ready are listed but cannot be picked. */
function fillModels() {
  const task = $("task").value;
  const select = $("model");
  select.replaceChildren();
  for (const model of state.models.filter((m) => m.task === task)) {
    const ready = model.state === "ready";
    const option = el("option", "", ready ? model.name : `${model.name} (${model.state})`);
    option.value = model.name;
    option.disabled = !ready;
    option.selected = ready && model.default;
    select.append(option);
  }
  if (!select.options.length) {
    const failed = state.models.filter((m) => m.state === "failed").length;
    const none = failed ? `no model serves this task (${failed} failed to load: see below)` : "no model serves this task";
    select.append(el("option", "", state.models.length ? none : "no models listed"));
  }
  updateControls();
}

function updateControls() {
  const model = selectedModel();
  const usable = model?.state === "ready";
  $("run").disabled = !(state.file && usable);
  const note = $("model-note");
  note.hidden = !usable;
  showWeightsBanner(model);
  if (!usable) return;
  const what = model.task === "pose" ? "keypoints" : "classes";
  note.textContent =
    `${model.dataset} · input ${model.input.width}×${model.input.height} · ` +
    `${model.num_labels} ${what} · ${model.provider} · weights: ${model.weights}`;
}

async function useFile(file) {
  state.file = file;
  const size = file.size < 1024 ? `${file.size} B` : `${(file.size / 1024).toFixed(0)} KiB`;
  $("file-name").textContent = `${file.name} (${size}) · drop or click for another`;
  try {
    state.picture = await createImageBitmap(file, { imageOrientation: "from-image" });
  } catch {
    state.picture = null; // the browser cannot read it; the API will say what is wrong
  }
  updateControls();
  run();
}

// -- one request -----------------------------------------------------------------------------------

async function run() {
  const model = selectedModel();
  if (!state.file || model?.state !== "ready") return;
  const id = ++state.run;
  const url = `${ENDPOINTS[model.task]}${ENDPOINTS[model.task].includes("?") ? "&" : "?"}model=${encodeURIComponent(model.name)}`;
  const form = new FormData();
  form.append("file", state.file);
  const started = performance.now();
  // A segmentation can take seconds on a CPU: count them, so the page is seen to be working.
  const waiting = () => {
    const seconds = (performance.now() - started) / 1000;
    $("status").textContent = `POST ${url} · waiting for ${model.name} · ${seconds.toFixed(1)} s`;
  };
  waiting();
  const ticker = setInterval(() => id === state.run && waiting(), 200);
  $("result").classList.add("stale"); // the previous answer stays, dimmed, until this one comes
  try {
    const answer = await api(url, { method: "POST", body: form });
    const roundTrip = performance.now() - started;
    if (id !== state.run) return;
    await show(model, answer, roundTrip, url);
  } catch (error) {
    if (id === state.run) showError(error, `POST ${url}`);
  } finally {
    clearInterval(ticker);
    if (id === state.run) {
      $("status").textContent = "";
      $("result").classList.remove("stale");
    }
  }
}

function showError(error, request) {
  const box = $("error");
  box.replaceChildren();
  if (error instanceof ApiError) {
    box.append(el("strong", "", `${request} → HTTP ${error.status} ${error.code}`), el("p", "", error.message));
    if (error.requestId) box.append(el("p", "request-id", `request ID ${error.requestId}`));
    if (typeof error.body === "object") box.append(el("pre", "", JSON.stringify(error.body, null, 2)));
  } else {
    box.append(el("strong", "", `${request} failed`), el("p", "", String(error.message ?? error)));
  }
  box.hidden = false;
  $("result").hidden = true;
}

async function show(model, answer, roundTrip, url) {
  const size = model.task === "pose" ? answer.image : answer.results[0].image;
  const canvas = $("canvas");
  [canvas.width, canvas.height] = [size.width, size.height];
  $("details").replaceChildren();
  $("tip").hidden = true;
  state.hover = null;
  if (model.task === "classification") showClassification(answer.results[0], model);
  else if (model.task === "segmentation") await showSegmentation(answer.results[0]);
  else if (model.task === "detection") showDetection(answer.results[0]);
  else showPose(answer);
  state.redraw();

  const t = answer.timing;
  $("summary").textContent = `${answer.model} v${answer.version} · image ${size.width}×${size.height}`;
  $("timing").textContent =
    `Server: preprocess ${ms(t.preprocess_ms)} · queue ${ms(t.queue_ms)} · ` +
    `inference ${ms(t.inference_ms)} · total ${ms(t.total_ms)}. ` +
    `Round trip seen by this page, upload included: ${ms(roundTrip)}.`;
  const name = state.file.name.replaceAll("'", "'\\''");
  const auth = $("key").value.trim() ? `-H "Authorization: Bearer $API_KEY" ` : ""; // never the key itself
  $("curl").textContent = `curl ${auth}-F 'file=@${name}' '${new URL(url, location.href).href}'`;
  $("error").hidden = true;
  $("result").hidden = false;
  $("result").dataset.task = model.task; // lets a test wait for this answer
}

function drawPicture(ctx) {
  const { width, height } = ctx.canvas;
  if (state.picture) ctx.drawImage(state.picture, 0, 0, width, height);
  else ctx.clearRect(0, 0, width, height);
}

// -- the four answers ------------------------------------------------------------------------------

/** One bar per item (`label`, `score`), in the given order; `title` and `colour` per item. */
function scoreBars(items, title, colour = () => null) {
  const list = el("ol", "bars");
  for (const item of items) {
    const fill = el("span", "fill");
    fill.style.width = `${Math.min(100, item.score * 100)}%`;
    if (colour(item)) fill.style.backgroundColor = colour(item);
    const bar = el("span", "bar");
    bar.append(fill);
    const row = el("li");
    row.title = title(item);
    row.append(el("span", "label", item.label), bar, el("span", "score", percent(item.score)));
    list.append(row);
  }
  return list;
}

function showClassification(result, model) {
  state.redraw = () => drawPicture($("canvas").getContext("2d"));
  const list = scoreBars(result.predictions, (p) => `class index ${p.index}`);
  $("details").append(el("h2", "", `Top ${result.predictions.length} of ${model.num_labels} classes`), list);
}

async function showSegmentation(result) {
  const mask = new Image();
  mask.src = `data:image/png;base64,${result.mask_png}`;
  await mask.decode();
  // A copy of the mask read back pixel by pixel: its colour names the class under the pointer.
  const { width, height } = result.image;
  const copy = Object.assign(document.createElement("canvas"), { width, height });
  const pixels = copy.getContext("2d", { willReadFrequently: true });
  pixels.drawImage(mask, 0, 0);
  const byColour = new Map(result.classes.filter((c) => c.color).map((c) => [c.color.join(), c]));

  const opacity = Object.assign(el("input"), { type: "range", min: 0, max: 100, value: 55, id: "opacity" });
  opacity.addEventListener("input", () => state.redraw());
  state.redraw = () => {
    const ctx = $("canvas").getContext("2d");
    drawPicture(ctx);
    ctx.globalAlpha = opacity.value / 100;
    ctx.drawImage(mask, 0, 0, width, height);
    ctx.globalAlpha = 1;
  };
  state.hover = (x, y) => {
    const c = byColour.get(Array.from(pixels.getImageData(x, y, 1, 1).data.slice(0, 3)).join());
    return c && `${c.label} · ${percent(c.fraction)} of the image`;
  };

  const legend = el("ul", "legend");
  const listed = result.classes.filter((c) => c.fraction >= SHOWN_SHARE);
  for (const c of listed) {
    const swatch = el("span", "swatch");
    swatch.style.backgroundColor = c.color ? `rgb(${c.color.join(",")})` : "transparent";
    const row = el("li");
    row.append(swatch, el("span", "label", c.label), el("span", "score", percent(c.fraction)));
    legend.append(row);
  }
  const hidden = result.classes.length - listed.length;
  if (hidden) {
    legend.append(el("li", "more", `and ${hidden} more with a few pixels each (under 0.01 %)`));
  }
  const slider = el("label", "slider", "Mask opacity ");
  slider.append(opacity);
  $("details").append(el("h2", "", `${result.classes.length} classes present`), slider, legend);
}

/** Heatmap peak → a colour from red (0) to green (1 and above). */
const scoreColour = (score) => `hsl(${Math.round(120 * Math.min(1, Math.max(0, score)))}, 90%, 50%)`;

function showPose(answer) {
  const canvas = $("canvas");
  const unit = Math.max(2, Math.round(Math.max(canvas.width, canvas.height) / 200)); // line width
  // The service's figure (`keypoint_threshold`, which its own drawing, overlay=true, uses too).
  const threshold = answer.keypoint_threshold;
  state.redraw = () => {
    const ctx = canvas.getContext("2d");
    drawPicture(ctx);
    // Each person's box, dashed, unless it is the whole image (then it would only frame the picture).
    if (answer.boxes !== "whole_image") {
      ctx.save();
      ctx.setLineDash([3 * unit, 2 * unit]);
      ctx.lineWidth = unit / 2;
      ctx.strokeStyle = "rgba(255, 255, 255, 0.9)";
      for (const [x1, y1, x2, y2] of answer.people.map((person) => person.box)) ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
      ctx.restore();
    }
    for (const person of answer.people) drawPerson(ctx, person, answer.skeleton, unit, threshold);
  };
  const points = answer.people.flatMap((person) => person.keypoints);
  state.hover = (x, y) => {
    // Within a few screen pixels of a keypoint, however much the canvas is scaled down.
    const reach = Math.max(3 * unit, (12 * canvas.width) / canvas.getBoundingClientRect().width);
    let best = null;
    for (const k of points) {
      const d = Math.hypot(k.x - x, k.y - y);
      if (d <= reach && (!best || d < best.d)) best = { k, d };
    }
    return best && `${best.k.name} · score ${best.k.score.toFixed(3)} · (${pixel(best.k.x)}, ${pixel(best.k.y)})`;
  };

  const people = answer.people.length;
  const drawn = points.filter((k) => k.score >= threshold).length;
  const heading = `${people} ${people === 1 ? "person" : "people"} · ${points.length} keypoints`;
  $("details").append(el("h2", "", `${heading} · ${drawn} drawn (score ≥ ${threshold})`));
  $("details").append(el("p", "note", BOXES_FROM[answer.boxes](answer.detector)));
  for (const person of answer.people) {
    const table = el("table", "keypoints");
    const found = person.box_score == null ? "" : ` · detector score ${person.box_score.toFixed(3)}`;
    table.createCaption().textContent =
      `Box [${person.box.map(pixel).join(", ")}]${found} · mean keypoint score ${person.score.toFixed(3)}`;
    const { width, height } = answer.image;
    for (const k of person.keypoints) {
      // A box reaching past the edge (mmpose pads its crop) can put a keypoint off the image.
      const outside = k.x < 0 || k.y < 0 || k.x >= width || k.y >= height;
      const row = table.insertRow();
      const dot = el("span", "swatch dot");
      dot.style.backgroundColor = scoreColour(k.score);
      row.insertCell().append(dot, k.name);
      row.insertCell().textContent = k.score.toFixed(3);
      row.insertCell().textContent = `(${pixel(k.x)}, ${pixel(k.y)})${outside ? " outside" : ""}`;
      if (outside) row.className = "outside";
      if (k.score < threshold) row.classList.add("not-drawn");
    }
    $("details").append(table);
  }
}

/** Where the pose answer's person boxes came from (its `boxes` field). */
const BOXES_FROM = {
  detector: (name) => `People found by the detector ${name}, then a pose per person.`,
  whole_image: () => "No detector is loaded: the whole image is one person's box.",
  request: () => "Person boxes as the request gave them.",
};

/** Boxes over the picture, the class and score on each; the one under the pointer named. */
function showDetection(result) {
  const canvas = $("canvas");
  const unit = Math.max(2, Math.round(Math.max(canvas.width, canvas.height) / 200));
  const colour = (index) => `hsl(${(index * 137) % 360}, 85%, 55%)`; // apart for neighbouring indices
  state.redraw = () => {
    const ctx = canvas.getContext("2d");
    drawPicture(ctx);
    ctx.font = `${6 * unit}px sans-serif`;
    ctx.textBaseline = "bottom";
    for (const o of [...result.objects].reverse()) { // the highest score drawn last, on top
      const [x1, y1, x2, y2] = o.box;
      ctx.lineWidth = unit;
      ctx.strokeStyle = colour(o.index);
      ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
      const text = `${o.label} ${o.score.toFixed(2)}`;
      ctx.fillStyle = "rgba(0, 0, 0, 0.6)";
      ctx.fillRect(x1, Math.max(0, y1 - 7 * unit), ctx.measureText(text).width + 2 * unit, 7 * unit);
      ctx.fillStyle = "white";
      ctx.fillText(text, x1 + unit, Math.max(7 * unit, y1));
    }
  };
  state.hover = (x, y) => {
    // The smallest box under the pointer: a box inside another stays reachable.
    const under = result.objects.filter(({ box: [x1, y1, x2, y2] }) => x >= x1 && x < x2 && y >= y1 && y < y2);
    const area = ({ box: [x1, y1, x2, y2] }) => (x2 - x1) * (y2 - y1);
    const o = under.sort((a, b) => area(a) - area(b))[0];
    return o && `${o.label} · score ${o.score.toFixed(3)} · [${o.box.map(pixel).join(", ")}]`;
  };

  const count = result.objects.length;
  const list = scoreBars(result.objects, (o) => `box [${o.box.map(pixel).join(", ")}]`, (o) => colour(o.index));
  $("details").append(el("h2", "", `${count} ${count === 1 ? "object" : "objects"} scoring above ${DETECT_SCORE}`), list);
}

/** A person's box, and the keypoints scoring at least `threshold` with the limbs between them. */
function drawPerson(ctx, person, skeleton, unit, threshold) {
  const shown = person.keypoints.filter((k) => k.score >= threshold);
  const at = new Map(shown.map((k) => [k.name, k]));
  const [x1, y1, x2, y2] = person.box;
  ctx.setLineDash([4 * unit, 2 * unit]);
  ctx.lineWidth = unit / 2;
  ctx.strokeStyle = "rgba(255, 255, 255, 0.8)";
  ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
  ctx.setLineDash([]);
  // Each limb twice, dark and wide under bright and narrow, to stand out on any background.
  for (const [style, width] of [["rgba(0, 0, 0, 0.6)", 2 * unit], ["rgb(0, 200, 255)", unit]]) {
    ctx.strokeStyle = style;
    ctx.lineWidth = width;
    for (const [a, b] of skeleton) {
      const [p, q] = [at.get(a), at.get(b)];
      if (!p || !q) continue;
      ctx.beginPath();
      ctx.moveTo(p.x, p.y);
      ctx.lineTo(q.x, q.y);
      ctx.stroke();
    }
  }
  ctx.lineWidth = unit / 2;
  ctx.strokeStyle = "white";
  for (const k of shown) {
    ctx.beginPath();
    ctx.arc(k.x, k.y, 2 * unit, 0, 2 * Math.PI);
    ctx.fillStyle = scoreColour(k.score);
    ctx.fill();
    ctx.stroke();
  }
}

// -- wiring ----------------------------------------------------------------------------------------

$("file").addEventListener("change", (event) => event.target.files[0] && useFile(event.target.files[0]));
$("task").addEventListener("change", () => (fillModels(), run()));
$("model").addEventListener("change", () => (updateControls(), run()));
$("controls").addEventListener("submit", (event) => (event.preventDefault(), run()));
$("key").addEventListener("change", () => {
  sessionStorage.setItem(KEY_STORAGE, $("key").value.trim());
  $("error").hidden = true;
  loadModels().then(run);
});
$("key").value = sessionStorage.getItem(KEY_STORAGE) ?? "";
$("key-field").hidden = !$("key").value;

// The whole page takes a dropped file; without this the browser would navigate to it.
document.addEventListener("dragover", (event) => {
  event.preventDefault();
  $("drop").classList.add("over");
});
document.addEventListener("dragleave", () => $("drop").classList.remove("over"));
document.addEventListener("drop", (event) => {
  event.preventDefault();
  $("drop").classList.remove("over");
  const file = event.dataTransfer?.files[0];
  if (file) useFile(file);
});

$("canvas").addEventListener("pointermove", (event) => {
  const canvas = $("canvas");
  const tip = $("tip");
  const rect = canvas.getBoundingClientRect();
  const x = Math.floor(((event.clientX - rect.left) * canvas.width) / rect.width);
  const y = Math.floor(((event.clientY - rect.top) * canvas.height) / rect.height);
  const text = state.hover?.(x, y);
  tip.hidden = !text;
  if (!text) return;
  tip.textContent = text;
  tip.style.left = `${event.clientX - rect.left + 14}px`;
  tip.style.top = `${event.clientY - rect.top + 14}px`;
});
$("canvas").addEventListener("pointerleave", () => ($("tip").hidden = true));

loadModels();
