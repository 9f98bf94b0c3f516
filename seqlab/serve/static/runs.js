/* seqlab's runs page: each served run's model card (HTML the server escaped from the card's Markdown) and its
   learning curves (train and valid per epoch, from metrics.jsonl), drawn as inline SVG. */
"use strict";

const W = 320, H = 190, PAD = {l: 44, r: 10, t: 10, b: 30};

function ticks(lo, hi, n) {
  if (hi === lo) return [lo];
  const step = (hi - lo) / (n - 1);
  return Array.from({length: n}, (_, i) => lo + i * step);
}

function label(v) {
  const a = Math.abs(v);
  return a >= 1000 ? v.toFixed(0) : a >= 10 ? v.toFixed(1) : a >= 0.01 || v === 0 ? v.toFixed(3) : v.toExponential(1);
}

/** One curve (loss or a metric): train and valid per epoch, with axes, points and a table of the values. */
function chart(runName, curve) {
  const series = Object.entries(curve.series);
  const points = series.flatMap(([, s]) => s);
  const figure = el("figure", {class: "curve", "data-metric": curve.metric});
  figure.append(el("figcaption", {text: curve.metric}));
  if (!points.length) {
    figure.append(el("p", {class: "muted", text: "not recorded per epoch"}));
    return figure;
  }
  const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
  let [x0, x1] = [Math.min(...xs), Math.max(...xs)], [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  if (x0 === x1) { x0 -= 1; x1 += 1; }
  if (y0 === y1) { y0 -= Math.abs(y0) * 0.1 || 1; y1 += Math.abs(y1) * 0.1 || 1; }
  const px = (x) => PAD.l + (x - x0) / (x1 - x0) * (W - PAD.l - PAD.r);
  const py = (y) => H - PAD.b - (y - y0) / (y1 - y0) * (H - PAD.t - PAD.b);
  const summary = series.map(([name, s]) => `${name}: ${s.map(([e, v]) => `epoch ${e} ${label(v)}`).join(", ")}`)
    .join("; ");
  const g = svg("svg", {viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${runName} ${curve.metric} per epoch. ${summary}`});
  for (const y of ticks(y0, y1, 4)) {
    g.append(svg("line", {class: "grid", x1: PAD.l, x2: W - PAD.r, y1: py(y), y2: py(y)}),
             svg("text", {x: PAD.l - 4, y: py(y) + 3, "text-anchor": "end"}, label(y)));
  }
  const epochs = [...new Set(xs)].sort((a, b) => a - b);
  const every = Math.max(1, Math.ceil(epochs.length / 8));
  epochs.forEach((e, i) => {
    if (i % every === 0) g.append(svg("text", {x: px(e), y: H - PAD.b + 14, "text-anchor": "middle"}, e));
  });
  g.append(svg("line", {class: "axis", x1: PAD.l, x2: PAD.l, y1: PAD.t, y2: H - PAD.b}),
           svg("line", {class: "axis", x1: PAD.l, x2: W - PAD.r, y1: H - PAD.b, y2: H - PAD.b}),
           svg("text", {x: (PAD.l + W - PAD.r) / 2, y: H - 4, "text-anchor": "middle"}, "epoch"));
  for (const [name, s] of series) {
    g.append(svg("polyline", {class: name, points: s.map(([x, y]) => `${px(x)},${py(y)}`).join(" ")}));
    for (const [x, y] of s) {
      g.append(svg("circle", {class: name, cx: px(x), cy: py(y), r: 3}, svg("title", {}, `${name}, epoch ${x}: ${label(y)}`)));
    }
  }
  figure.append(g, el("div", {class: "legend"}, ...series.map(([name]) =>
    el("span", {}, el("span", {class: `swatch ${name}`, "aria-hidden": "true"}), name))));
  const rows = epochs.map((e) => el("tr", {}, el("th", {scope: "row", text: e}),
    ...series.map(([, s]) => { const p = s.find((q) => q[0] === e); return el("td", {text: p ? label(p[1]) : ""}); })));
  figure.append(el("details", {}, el("summary", {text: "values"}),
    el("div", {class: "table"}, el("table", {},
      el("thead", {}, el("tr", {}, el("th", {scope: "col", text: "epoch"}),
                               ...series.map(([name]) => el("th", {scope: "col", text: name})))),
      el("tbody", {}, ...rows)))));
  return figure;
}

async function start() {
  const box = document.getElementById("runs");
  const got = await getJSON("v1/runs");
  if (!got.ok) {
    const e = document.getElementById("error");
    e.textContent = got.error;
    e.hidden = false;
    box.replaceChildren(el("p", {class: "muted", text: "No runs to show: see the message above."}));
    return;
  }
  const runs = got.data.runs;
  document.getElementById("toc").replaceChildren(...runs.map((r) => el("a", {href: `#run-${r.name}`, text: r.name})));
  box.replaceChildren(...runs.map((r) => {
    const article = el("article", {class: "run", id: `run-${r.name}`, "aria-labelledby": `run-${r.name}-title`},
      el("h2", {id: `run-${r.name}-title`, text: r.name}),
      el("p", {class: "muted", text: [r.task, r.model, r.status].filter(Boolean).join(" · ")}));
    if (r.error) {
      article.append(el("div", {class: "error", text: r.error}));
      return article;
    }
    article.append(el("p", {}, el("a", {href: `./#${encodeURIComponent(r.name)}`, text: `Try ${r.name}`})),
                   el("h3", {text: "Learning curves"}),
                   el("div", {class: "curves"}, ...r.curves.map((c) => chart(r.name, c))));
    const card = el("section", {class: "card", "aria-label": `model card of ${r.name}`});
    card.innerHTML = r.card_html; // escaped by the server (seqlab.serve.page.markdown_html): text, never markup
    article.append(card);
    return article;
  }));
  if (location.hash) {
    const target = document.getElementById(decodeURIComponent(location.hash.slice(1)));
    if (target) target.scrollIntoView();
  }
}

document.addEventListener("DOMContentLoaded", start);
