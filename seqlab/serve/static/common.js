/* seqlab's page: helpers shared by the model page (app.js) and the runs page (runs.js). No external code. */
"use strict";

/** An element: el("p", {class: "x", text: "..."}, child, ...). Text is always set as text, never as HTML. */
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") node.textContent = v;
    else if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

/** An SVG element with its attributes. */
function svg(tag, attrs, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

/** The one line to show for a failed response: the server's {"error": "..."} with its status. */
async function errorLine(response) {
  let message = "";
  try {
    const body = await response.clone().json();
    message = body && typeof body.error === "string" ? body.error : JSON.stringify(body);
  } catch (_) {
    try { message = (await response.text()).split("\n")[0].slice(0, 300); } catch (_) { message = ""; }
  }
  const retry = response.headers.get("Retry-After");
  return `${response.status} ${response.statusText || ""}`.trim() + ": " + (message || "no message") +
    (retry ? ` (retry after ${retry} s)` : "");
}

/** GET a JSON document of this server: {ok, data} or {ok: false, error: "one line"}. */
async function getJSON(path) {
  try {
    const r = await fetch(path, {headers: {Accept: "application/json"}});
    if (!r.ok) return {ok: false, error: await errorLine(r)};
    return {ok: true, data: await r.json()};
  } catch (e) {
    return {ok: false, error: `cannot reach the server (${e.message || e})`};
  }
}

function fmt(p, digits) { return Number(p).toFixed(digits === undefined ? 3 : digits); }
function percent(p) { return (100 * p).toFixed(1) + "%"; }
