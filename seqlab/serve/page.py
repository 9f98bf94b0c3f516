"""The web page of `seqlab serve`: `/` to try every served model, `/runs` for their model cards and learning
curves. Plain HTML, CSS and JavaScript in `seqlab/serve/static/` (no build step, no external URL: it works
offline); the page talks only to the JSON API (`/v1/models`, `/v1/models/{name}/predict`) and to

    GET /v1/runs        each served run: name, task, model, its model card (Markdown and escaped HTML) and its
                        learning curves per epoch (train and valid loss, the run's metric), from metrics.jsonl

The pages are sent with a Content-Security-Policy that allows only this server's own scripts, styles and
images (and the browser's blob:/data: pictures of an upload), so a page that tried to fetch anything else
would be refused by the browser too.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from seqlab.errors import SeqlabError
from seqlab.report.card import model_card
from seqlab.report.runs import run_facts

STATIC = Path(__file__).resolve().parent / "static"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


# ---------------------------------------------------------------------------------------------- markdown
def _inline(text: str) -> str:
    """One line of Markdown as HTML: escaped first, then `code` and **bold** (nothing else is markup)."""
    out, parts = [], re.split(r"(`[^`]*`)", text)
    for part in parts:
        if len(part) >= 2 and part.startswith("`") and part.endswith("`"):
            out.append(f"<code>{html.escape(part[1:-1])}</code>")
        else:
            escaped = html.escape(part)
            out.append(re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escaped))
    return "".join(out)


def markdown_html(text: str) -> str:
    """The Markdown of a model card as safe HTML: headings, bullet lists, pipe tables, fenced code blocks and
    paragraphs, with `code` and **bold** inside a line. Every character of the text is HTML-escaped, so a
    card holding `<script>` (a dataset's name, a config value) shows it as text."""
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            block = []
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                block.append(lines[i])
                i += 1
            out.append(f"<pre><code>{html.escape(chr(10).join(block))}</code></pre>")
            i += 1
        elif m := re.match(r"(#{1,6})\s+(.*)", line):
            level = min(len(m.group(1)) + 1, 6)  # the page has its own h1
            out.append(f"<h{level}>{_inline(m.group(2))}</h{level}>")
            i += 1
        elif line.startswith("- "):
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append(f"<li>{_inline(lines[i][2:])}</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
        elif line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append([c.strip() for c in lines[i].strip().strip("|").split("|")])
                i += 1
            rows = [r for r in rows if not all(re.fullmatch(r":?-+:?", c) for c in r)]  # the |---| line
            head, body = (rows[0], rows[1:]) if rows else ([], [])
            cells = "".join(f"<th scope=\"col\">{_inline(c)}</th>" for c in head)
            body_html = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in body)
            out.append(f"<div class=\"table\"><table><thead><tr>{cells}</tr></thead><tbody>{body_html}</tbody>"
                       "</table></div>")
        elif not line.strip():
            i += 1
        else:
            para = []
            while i < len(lines) and lines[i].strip() and not re.match(r"(#{1,6}\s|- |\||```)", lines[i]):
                para.append(lines[i])
                i += 1
            out.append(f"<p>{_inline(' '.join(para))}</p>")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------- runs
def _series(records: list[dict], split: str, key: str) -> list[list[float]]:
    """[[epoch, value], ...] of `key` in the per-epoch records of `split` (the last record of each epoch)."""
    by_epoch = {r["epoch"]: r[key] for r in records
                if r.get("split") == split and isinstance(r.get(key), (int, float)) and "epoch" in r}
    return [[e, by_epoch[e]] for e in sorted(by_epoch)]


def run_page(name: str, run_dir: str | Path) -> dict[str, Any]:
    """What `/runs` shows of one run: its model card and its learning curves (loss and the run's metric per
    epoch, train and valid), read from the run directory as `seqlab report` reads it."""
    facts = run_facts(run_dir, name)
    card = model_card(facts)
    curves = []
    for key in dict.fromkeys(("loss", facts.metric)):
        series = {label: _series(facts.records, split, key) for split, label in (("train_epoch", "train"),
                                                                                  ("valid", "valid"))}
        curves.append({"metric": key, "series": {k: v for k, v in series.items() if v}})
    return {"name": name, "task": facts.task, "model": facts.model, "status": facts.status,
            "card_markdown": card, "card_html": markdown_html(card), "curves": curves}


# ---------------------------------------------------------------------------------------------- routes
def add_pages(app: FastAPI, models: dict[str, Any]) -> None:
    """Serve the page at `/`, the runs at `/runs`, their files under `/static/` and the runs' data at
    `/v1/runs` on `app` (the JSON API of `models` is untouched)."""
    headers = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=headers)

    @app.get("/runs", include_in_schema=False)
    async def runs() -> FileResponse:
        return FileResponse(STATIC / "runs.html", media_type="text/html", headers=headers)

    @app.get("/v1/runs", summary="The served runs: model card (Markdown and HTML) and learning curves")
    def runs_data() -> dict:  # reads files: FastAPI runs it in its thread pool, off the event loop
        out = []
        for name, m in models.items():
            run_dir = getattr(m.predictor, "run_dir", None)
            if run_dir is None:
                out.append({"name": name, "task": m.task, "error": "no run directory (a model given in Python)"})
                continue
            try:
                out.append(run_page(name, run_dir))
            except (SeqlabError, OSError) as e:  # a run folder changed under the server: say so, serve the rest
                out.append({"name": name, "task": m.task, "error": f"cannot read the run: {e}"})
        return {"runs": out}

    app.mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static")
