/* seqlab's model page: pick a served model, give it an input, see the answer.

   Everything comes from the JSON API: GET v1/models describes each model (its input kind, its options with
   types, defaults and bounds, whether it attends, its labels) and POST v1/models/NAME/predict answers. The
   form is made from that description and the answer is drawn from the fields the result holds (labels and
   probabilities, tags, a translation, a caption, attention), so no task is named here. */
"use strict";

const state = {models: [], model: null, busy: false, abort: null, picture: null, pictureURL: null,
               drawn: false, timings: []};
const $ = (id) => document.getElementById(id);

// ------------------------------------------------------------------------------------------- models
async function start() {
  const got = await getJSON("v1/models");
  const select = $("model");
  if (!got.ok) {
    select.replaceChildren(el("option", {text: "no models"}));
    $("panel-title").textContent = "The models could not be listed";
    showError(got.error);
    return;
  }
  state.models = got.data.models;
  select.replaceChildren(...state.models.map((m) => el("option", {value: m.name, text: `${m.name} (${m.task})`})));
  select.disabled = false;
  const wanted = decodeURIComponent(location.hash.slice(1));
  if (state.models.some((m) => m.name === wanted)) select.value = wanted;
  select.addEventListener("change", () => {
    history.replaceState(null, "", "#" + encodeURIComponent(select.value));
    choose(select.value);
  });
  window.addEventListener("hashchange", () => {
    const name = decodeURIComponent(location.hash.slice(1));
    if (state.models.some((m) => m.name === name) && name !== select.value) { select.value = name; choose(name); }
  });
  if (!state.models.length) { $("panel-title").textContent = "This server serves no model"; return; }
  choose(select.value);
}

function isDigitModel(m) {
  const labels = (m.labels || []).slice().sort();
  return m.inputs.kind === "image" && labels.length === 10 && labels.every((x, i) => x === String(i));
}

function choose(name) {
  const m = state.models.find((x) => x.name === name);
  if (state.abort) state.abort.abort();
  state.model = m;
  state.picture = null;
  state.drawn = false;
  $("panel-title").textContent = `${m.name}: ${m.task}`;
  $("panel-help").textContent = m.inputs.help;
  const metrics = (m.metrics && m.metrics.test) || {};
  const shown = Object.entries(metrics).filter(([, v]) => typeof v === "number").slice(0, 3)
    .map(([k, v]) => `${k} ${fmt(v)}`).join(", ");
  $("model-about").textContent = `model ${m.model}` + (m.dataset ? `, data ${m.dataset}` : "") +
    (shown ? `; test ${shown}` : "");
  renderInput(m);
  renderOptions(m);
  clearError();
  $("status").textContent = "";
  $("result").replaceChildren(el("p", {class: "muted", text: "The answer appears here."}));
  $("submit").disabled = false;
  $("submit").textContent = m.inputs.kind === "prompt" ? "Generate" : m.verb === "predict" ? "Predict" :
    m.verb.charAt(0).toUpperCase() + m.verb.slice(1);
}

// ------------------------------------------------------------------------------------------- the form
function renderInput(m) {
  const area = $("input-area");
  const kind = m.inputs.kind;
  if (kind === "image") {
    const file = el("input", {type: "file", id: "image", accept: "image/*", "aria-describedby": "panel-help"});
    file.addEventListener("change", () => {
      state.picture = file.files[0] || null;
      state.drawn = false;
      if (state.picture) showPreview(state.picture);
    });
    const preview = el("img", {id: "preview", alt: "the picture to send", hidden: true});
    const parts = [el("div", {class: "field"}, el("label", {for: "image", text: "Picture"}), file), preview];
    if (isDigitModel(m)) parts.push(digitPad());
    area.replaceChildren(...parts);
    $("hint").textContent = "Tab to the button, Enter sends";
    return;
  }
  const label = {text: "Text", tokens: "Sentence (words split at spaces)", prompt: "Prompt"}[kind] || "Input";
  const box = kind === "tokens"
    ? el("input", {type: "text", id: "input", autocomplete: "off", spellcheck: "false"})
    : el("textarea", {id: "input", rows: kind === "prompt" ? 3 : 4, spellcheck: "false"});
  box.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); $("form").requestSubmit(); }
  });
  area.replaceChildren(el("div", {class: "field"}, el("label", {for: "input", text: label}), box));
  $("hint").textContent = kind === "tokens" ? "Enter sends" : "Ctrl+Enter sends";
}

function showPreview(blob) {
  if (state.pictureURL) URL.revokeObjectURL(state.pictureURL);
  state.pictureURL = URL.createObjectURL(blob);
  const img = $("preview");
  if (img) { img.src = state.pictureURL; img.hidden = false; }
}

/** A 28x28 grey canvas to draw a digit on (white on black, as MNIST and sklearn's digits), shown large. */
function digitPad() {
  const canvas = el("canvas", {id: "pad", width: 28, height: 28, class: "pad",
                               "aria-label": "draw a digit here with the mouse, a pen or a finger"});
  const ctx = canvas.getContext("2d");
  const clear = () => { ctx.fillStyle = "#000"; ctx.fillRect(0, 0, 28, 28); state.drawn = false; };
  clear();
  let last = null;
  const at = (ev) => {
    const r = canvas.getBoundingClientRect();
    return [(ev.clientX - r.left) * 28 / r.width, (ev.clientY - r.top) * 28 / r.height];
  };
  const line = (a, b) => {
    ctx.strokeStyle = "#fff"; ctx.lineWidth = 2.4; ctx.lineCap = "round"; ctx.lineJoin = "round";
    ctx.beginPath(); ctx.moveTo(a[0], a[1]); ctx.lineTo(b[0], b[1]); ctx.stroke();
  };
  canvas.addEventListener("pointerdown", (ev) => {
    ev.preventDefault();
    canvas.setPointerCapture(ev.pointerId);
    last = at(ev);
    line(last, [last[0] + 0.01, last[1] + 0.01]);
    state.drawn = true;
    state.picture = null;
    const file = $("image");
    if (file) file.value = "";
    const img = $("preview");
    if (img) img.hidden = true;
  });
  canvas.addEventListener("pointermove", (ev) => {
    if (!last) return;
    const p = at(ev);
    line(last, p);
    last = p;
  });
  const up = () => { last = null; };
  canvas.addEventListener("pointerup", up);
  canvas.addEventListener("pointercancel", up);
  const clearButton = el("button", {type: "button", id: "pad-clear", text: "Clear", onclick: clear});
  return el("div", {class: "field pad-field"},
    el("span", {class: "label", id: "pad-label", text: "…or draw a digit (28×28 grey)"}), canvas, clearButton);
}

const SKIP = new Set(["attention"]); // set from the model's description, not by hand

function renderOptions(m) {
  const list = $("option-list");
  const items = [];
  for (const [name, o] of Object.entries(m.options || {})) {
    if (SKIP.has(name)) continue;
    const id = "opt-" + name;
    const help = el("small", {id: id + "-help", class: "muted", text: o.help});
    let input;
    if (o.type === "bool") {
      input = el("input", {type: "checkbox", id, name, "aria-describedby": id + "-help"});
      input.checked = !!o.default;
      items.push(el("div", {class: "option check"}, input, el("label", {for: id, text: name}), help));
      continue;
    }
    const bound = (m.limits || {})[name] ?? (m.limits || {})["max_" + name];
    const max = o.max ?? bound;
    input = el("input", {type: "number", id, name, step: o.type === "int" ? 1 : "any", min: o.min, max,
                         inputmode: o.type === "int" ? "numeric" : "decimal", "aria-describedby": id + "-help",
                         placeholder: o.default === null ? "default" : ""});
    let value = o.default;
    if (name === "top_k" && m.labels && m.labels.length && m.inputs.kind !== "tokens") {
      value = Math.min(m.labels.length, 10); // every label's bar, up to ten
    }
    if (value !== null && value !== undefined && bound !== undefined) value = Math.min(value, bound);
    if (value !== null && value !== undefined) input.value = value;
    items.push(el("div", {class: "option"}, el("label", {for: id, text: name}), input, help));
  }
  list.replaceChildren(...items);
  $("options").hidden = items.length === 0;
}

/** The options of the form: {name: value} typed for JSON, left out when empty (the model's default). */
function formOptions(m) {
  const out = {};
  for (const [name, o] of Object.entries(m.options || {})) {
    const input = $("opt-" + name);
    if (!input) continue;
    if (o.type === "bool") { out[name] = input.checked; continue; }
    const raw = input.value.trim();
    if (raw === "") {
      if (input.validity && input.validity.badInput) out[name] = "not a number";
      continue;
    }
    out[name] = o.type === "int" && /^-?\d+$/.test(raw) ? parseInt(raw, 10) : Number(raw);
  }
  if (m.attends && m.options && m.options.attention) out.attention = true;
  return out;
}

// ------------------------------------------------------------------------------------------- sending
function showError(line) {
  const box = $("error");
  box.textContent = line;
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

function setBusy(busy) {
  state.busy = busy;
  $("submit").disabled = busy;
  $("stop").hidden = !(busy && state.abort);
  $("panel").setAttribute("aria-busy", busy ? "true" : "false");
}

async function submit(ev) {
  ev.preventDefault();
  const m = state.model;
  if (!m || state.busy) return;
  clearError();
  const t0 = performance.now();
  $("status").textContent = "Working…";
  $("result").dataset.state = "working";
  try {
    const done = m.inputs.kind === "image" ? await sendPicture(m) : m.inputs.kind === "prompt"
      ? await sendPrompt(m, t0) : await sendJSON(m);
    const ms = performance.now() - t0;
    if (done) {
      state.timings.push({model: m.name, task: m.task, ms});
      $("result").dataset.ms = ms.toFixed(1);
      $("result").dataset.state = "answered";
      $("status").textContent = `Answered in ${Math.round(ms)} ms.`;
    }
  } catch (e) {
    if (e.name === "AbortError") {
      $("result").dataset.state = "stopped";
      $("status").textContent = "Stopped.";
    } else {
      failed(`cannot reach the server (${e.message || e})`);
    }
  } finally {
    state.abort = null;
    setBusy(false);
  }
}

/** A failed request: its one line in place, and the panel says there is no answer (never blank). */
function failed(line) {
  showError(line);
  $("status").textContent = "No answer.";
  $("result").dataset.state = "error";
  $("result").replaceChildren(el("p", {class: "muted", text: "No answer: see the message above."}));
}

async function post(m, init) {
  setBusy(true);
  const r = await fetch(m.endpoint, {method: "POST", ...init});
  if (!r.ok) { failed(await errorLine(r)); return null; }
  return r;
}

async function sendJSON(m) {
  const text = $("input").value;
  const body = {[m.inputs.field]: [text], ...formOptions(m)};
  const r = await post(m, {headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
  if (!r) return false;
  const data = await r.json();
  await renderResult(m, data.results[0], null);
  return true;
}

async function sendPicture(m) {
  let picture = state.picture;
  if (!picture && state.drawn) {
    picture = await new Promise((ok) => $("pad").toBlob(ok, "image/png"));
  }
  if (!picture) {
    failed("choose a picture" + (isDigitModel(m) ? " or draw a digit" : "") + " first");
    return false;
  }
  const form = new FormData();
  form.append("image", picture, picture.name || "drawing.png");
  for (const [k, v] of Object.entries(formOptions(m))) form.append(k, String(v));
  const r = await post(m, {body: form});
  if (!r) return false;
  const data = await r.json();
  await renderResult(m, data.results[0], picture);
  return true;
}

/** Server-sent events of the lm's pieces, appended to the text as they come; `event: done` ends it. */
async function sendPrompt(m, t0) {
  const prompt = $("input").value;
  state.abort = new AbortController();
  const body = {prompt, ...formOptions(m), stream: true};
  const r = await post(m, {headers: {"Content-Type": "application/json", Accept: "text/event-stream"},
                           body: JSON.stringify(body), signal: state.abort.signal});
  if (!r) return false;
  const out = el("span", {class: "generated", id: "generated"});
  $("result").replaceChildren(el("p", {class: "generation"}, el("span", {class: "prompt", text: prompt}), out));
  const reader = r.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let first = null;
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, {stream: true});
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      if (/^event: done/m.test(event)) { finish(); return true; }
      const data = event.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("");
      if (!data) continue;
      const piece = JSON.parse(data);
      if (piece.error) { showError(piece.error); continue; }
      out.textContent += piece.text;
      if (first === null) { first = performance.now() - t0; $("result").dataset.firstMs = first.toFixed(1); }
    }
  }
  finish();
  return true;

  function finish() {
    $("result").dataset.text = out.textContent;
  }
}

// ------------------------------------------------------------------------------------------- answers
/** Draw one result from the fields it holds. */
async function renderResult(m, r, picture) {
  const parts = [];
  if (Array.isArray(r.top_k) && !Array.isArray(r.tags)) parts.push(...labelParts(m, r));
  if (Array.isArray(r.tags)) parts.push(tagParts(m, r));
  if (typeof r.translation === "string") parts.push(...translationParts(r));
  if (typeof r.caption === "string") parts.push(...(await captionParts(r, picture)));
  if (Array.isArray(r.neighbours)) {
    parts.push(el("h3", {text: "Nearest words (cosine)"}), barList(r.neighbours, "cosine"));
  }
  if (!parts.length && typeof r.text === "string") parts.push(el("p", {class: "generation", text: r.text}));
  if (!parts.length) parts.push(el("pre", {text: JSON.stringify(r, null, 2)}));
  $("result").replaceChildren(...parts);
}

function labelParts(m, r) {
  const parts = [el("p", {class: "answer"}, "Label: ", el("strong", {class: "label-best", text: r.label}),
                      ` (${percent(r.probability)})`)];
  parts.push(el("h3", {text: "Probabilities"}), barList(r.top_k, "probability"));
  if (Array.isArray(r.labels)) {
    parts.push(el("h3", {text: "Labels over the threshold"}),
      r.labels.length ? el("ul", {class: "chips", id: "over-threshold"}, ...r.labels.map(([label, p]) =>
        el("li", {class: "chip", "data-label": label}, el("span", {class: "chip-tag", text: label}),
           el("span", {class: "chip-p", text: percent(p)}))))
        : el("p", {id: "over-threshold", class: "muted", text: "none"}));
  }
  if (Array.isArray(r.attention)) {
    const max = Math.max(1e-9, ...r.attention.map(([, w]) => w));
    const words = r.attention.map(([token, w]) => {
      const span = el("span", {class: "word", title: `attention ${fmt(w)}`, "data-w": w, text: token,
                               "aria-label": `${token}, attention ${fmt(w)}`});
      span.style.backgroundColor = `rgba(245, 158, 11, ${(0.85 * w / max).toFixed(3)})`;
      return span;
    });
    parts.push(el("h3", {text: "Attention over the words"}), el("p", {class: "words", id: "words"}, ...joined(words)));
  }
  return parts;
}

/** [(name, value in [0, 1] or a cosine), ...] as labelled bars, best first. */
function barList(pairs, what) {
  const rows = pairs.map(([label, p]) => {
    const bar = el("span", {class: "bar-fill"});
    bar.style.width = percent(Math.max(0, Math.min(1, p)));
    return el("li", {class: "bar-row", "data-label": label, "data-p": p},
      el("span", {class: "bar-label", text: label}),
      el("span", {class: "bar", role: "meter", "aria-valuemin": what === "cosine" ? -1 : 0, "aria-valuemax": 1,
                  "aria-valuenow": fmt(p, 4), "aria-label": `${label} ${what}`}, bar),
      el("span", {class: "bar-value", text: what === "cosine" ? fmt(p) : percent(p)}));
  });
  return el("ol", {class: "bars", id: "bars"}, ...rows);
}

function joined(nodes) {
  const out = [];
  nodes.forEach((n, i) => { if (i) out.push(" "); out.push(n); });
  return out;
}

function tagParts(m, r) {
  const tags = m.labels || [];
  const chips = r.tokens.map((token, i) => {
    const tag = r.tags[i];
    const hue = ((Math.max(0, tags.indexOf(tag)) * 137.508) % 360).toFixed(0);
    const alternatives = Array.isArray(r.top_k) ? r.top_k[i].map(([t, p]) => `${t} ${percent(p)}`).join(", ") : "";
    const chip = el("li", {class: "chip tag-chip", "data-tag": tag, "data-p": r.probabilities[i], title: alternatives || null},
      el("span", {class: "chip-word", text: token}), el("span", {class: "chip-tag", text: tag}),
      el("span", {class: "chip-p", text: percent(r.probabilities[i])}));
    chip.style.setProperty("--hue", hue);
    return chip;
  });
  return el("ul", {class: "chips tagged", id: "tagged", "aria-label": "each word with its tag and probability"},
            ...chips);
}

function translationParts(r) {
  const parts = [el("p", {class: "answer"}, "Translation: ", el("strong", {id: "translation", text: r.translation}))];
  if (Array.isArray(r.attention) && Array.isArray(r.src_tokens)) {
    const head = el("tr", {}, el("th", {scope: "col", text: "output \\ input"}),
                    ...r.src_tokens.map((t) => el("th", {scope: "col", class: "src", text: t})));
    const rows = r.attention.map((row, i) => el("tr", {},
      el("th", {scope: "row", text: r.tgt_tokens[i] ?? ""}),
      ...row.map((w, j) => {
        const td = el("td", {title: `${r.tgt_tokens[i]} ← ${r.src_tokens[j]}: ${fmt(w)}`, text: fmt(w, 2)});
        td.style.backgroundColor = `rgba(37, 99, 235, ${Math.min(1, w).toFixed(3)})`;
        if (w > 0.5) td.classList.add("dark");
        return td;
      })));
    parts.push(el("h3", {text: "Attention of each output token over the input"}),
      el("div", {class: "table heat"}, el("table", {id: "heatmap"}, el("thead", {}, head), el("tbody", {}, ...rows))));
  }
  return parts;
}

async function captionParts(r, picture) {
  const parts = [el("p", {class: "answer"}, "Caption: ", el("strong", {id: "caption", text: r.caption}))];
  if (!Array.isArray(r.attention) || !Array.isArray(r.words) || !picture) return parts;
  const image = new Image();
  image.src = URL.createObjectURL(picture);
  await image.decode().catch(() => null);
  const [rows, cols] = r.grid;
  const cards = r.words.map((word, k) => {
    const canvas = el("canvas", {width: 96, height: 96, role: "img",
                                 "aria-label": `attention over the picture for the word ${word}`});
    const ctx = canvas.getContext("2d");
    ctx.imageSmoothingEnabled = false;
    if (image.naturalWidth) ctx.drawImage(image, 0, 0, 96, 96);
    const weights = r.attention[k];
    const max = Math.max(1e-9, ...weights);
    for (let i = 0; i < rows; i++) {
      for (let j = 0; j < cols; j++) {
        ctx.fillStyle = `rgba(0, 0, 0, ${(0.8 * (1 - weights[i * cols + j] / max)).toFixed(3)})`;
        ctx.fillRect(j * 96 / cols, i * 96 / rows, 96 / cols + 0.5, 96 / rows + 0.5);
      }
    }
    return el("figure", {class: "word-attention"}, canvas, el("figcaption", {text: word}));
  });
  URL.revokeObjectURL(image.src);
  parts.push(el("h3", {text: "Where each word looked (bright: more attention)"}),
             el("div", {class: "word-attentions", id: "word-attention"}, ...cards));
  return parts;
}

// ------------------------------------------------------------------------------------------- start
document.addEventListener("DOMContentLoaded", () => {
  $("form").addEventListener("submit", submit);
  $("stop").addEventListener("click", () => { if (state.abort) state.abort.abort(); });
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape" && state.abort) state.abort.abort();
  });
  window.seqlabPage = state; // for tests and the curious: the timings of each answer
  start();
});
