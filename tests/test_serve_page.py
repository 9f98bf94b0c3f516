"""The web page of `seqlab serve` in a real browser: headless Chromium driven by Selenium against a live server
(uvicorn in a thread, on a free port) of tiny trained runs of every task. For each task the test types or
uploads an input, clicks, reads the rendered answer from the page and checks it equals the Python API's
(`seqlab.load(run).predict`, what `seqlab predict` prints) for the same input, with a screenshot per task in
the test's folder. Also: the pages load nothing but this server's own files, a 413 and a 422 show as a
message in the panel and the server serves on, the page fits a phone's width, the runs page shows each run's
card and curves. The time from the click to the rendered answer is measured per task and written to
`page_timings.json` in the test's folder (printed too; not asserted).

The browser tests are skipped when selenium, chromium or chromedriver is absent; the HTTP-level tests of the
page's routes and the card's Markdown rendering run without a browser."""

from __future__ import annotations

import base64
import io
import json
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

import seqlab  # noqa: E402
from seqlab.data.images import load_digits_arrays  # noqa: E402
from seqlab.serve.app import ServeConfig, create_app  # noqa: E402
from seqlab.serve.page import markdown_html  # noqa: E402
from tests.test_serve_runs import (  # noqa: E402
    train_caption,
    train_classify,
    train_image,
    train_lm,
    train_tag,
    train_translate,
)

LIMITS = dict(max_texts=4, max_chars=200, max_new_tokens=50, max_beam=4, max_body_bytes=20_000, batch_wait_ms=1)
TIMINGS: dict[str, dict] = {}


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("page")
    return {"classify-rnn": train_classify(root, "rnn", **{"model.pooling": "attention"}),
            "tag-rnn": train_tag(root), "translate": train_translate(root), "lm": train_lm(root),
            "image": train_image(root), "caption": train_caption(root), "vectors": train_vectors(root)}


def train_vectors(root: Path) -> Path:
    """Word vectors (task=vectors, `seqlab nearest`) of pets and vehicles, each in contexts of their own."""
    from tests.test_task_vectors import SMALL, corpus

    return seqlab.train({**SMALL, "data.train": str(corpus(root, n=200)), "train.epochs": 1}, out=root / "vectors",
                        quiet=True, log=None)


@pytest.fixture(scope="module")
def predictors(runs) -> dict:
    return {name: seqlab.load(run) for name, run in runs.items()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(runs, tmp_path_factory):
    """A live `seqlab serve` of the runs: uvicorn in a thread on a free port; yields its origin."""
    import uvicorn

    port = free_port()
    app = create_app(list(runs.values()), ServeConfig(**LIMITS))
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=30)
    out = tmp_path_factory.getbasetemp() / "page_timings.json"
    if TIMINGS:
        out.write_text(json.dumps(TIMINGS, indent=2), encoding="utf-8")
        print(f"\nclick -> rendered answer per task ({out}):")
        for task, t in TIMINGS.items():
            print(f"  {task:<14} page {t['page_ms']:7.1f} ms   wall {t['wall_ms']:7.1f} ms")


def _browser() -> tuple[str, str] | None:
    chrome = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    driver = shutil.which("chromedriver")
    return (chrome, driver) if chrome and driver else None


@pytest.fixture(scope="module")
def browser() -> tuple[str, str]:
    """(chromium, chromedriver), or a skip when selenium or either is absent (before any run is trained)."""
    pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    found = _browser()
    if found is None:
        pytest.skip("chromium or chromedriver is absent (apt-get install chromium chromium-driver)")
    return found


@pytest.fixture(scope="module")
def driver(browser, server):
    from selenium import webdriver

    found = browser
    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000", "--no-first-run", "--disable-extensions", "--disable-sync",
                "--disable-background-networking", "--disable-component-update"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the console: script errors, CSP refusals
    d = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=found[1]))
    d.set_page_load_timeout(30)
    yield d
    d.quit()


# ---------------------------------------------------------------------------------------------- helpers
def by(kind: str):
    from selenium.webdriver.common.by import By

    return getattr(By, kind)


def wait(d, condition, timeout: float = 30):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(d, timeout, poll_frequency=0.02).until(condition)


def open_model(d, origin: str, name: str) -> None:
    """The page with `name` picked in the model list (as a user does: the select's change)."""
    from selenium.webdriver.support.ui import Select

    if not d.current_url.startswith(origin + "/") or "/runs" in d.current_url:
        d.get(origin + "/")
    wait(d, lambda d: d.find_element(by("ID"), "model").is_enabled())
    Select(d.find_element(by("ID"), "model")).select_by_value(name)
    wait(d, lambda d: d.find_element(by("ID"), "panel-title").text.startswith(name + ":"))


def set_option(d, name: str, value) -> None:
    box = d.find_element(by("ID"), f"opt-{name}")
    box.clear()
    if value is not None:
        box.send_keys(str(value))


def set_text(d, text: str) -> None:
    """The input box's text (long texts through JS, as a paste would: typing 25,000 keys takes minutes)."""
    box = d.find_element(by("ID"), "input")
    if len(text) > 500:
        d.execute_script("arguments[0].value = arguments[1];", box, text)
    else:
        box.clear()
        box.send_keys(text)


def submit(d, task: str, how=None) -> str:
    """Click the button (or `how()`), wait for the answer or the error, record the time; the result's state."""
    result = d.find_element(by("ID"), "result")
    d.execute_script("arguments[0].dataset.state = 'idle';", result)
    t0 = time.perf_counter()
    (how or d.find_element(by("ID"), "submit").click)()
    wait(d, lambda d: result.get_attribute("data-state") in ("answered", "error"))
    wall = (time.perf_counter() - t0) * 1000
    state = result.get_attribute("data-state")
    if state == "answered" and task not in TIMINGS:  # a first input of each task
        TIMINGS[task] = {"page_ms": float(result.get_attribute("data-ms")), "wall_ms": round(wall, 1)}
    return state


def screenshot(d, tmp_path: Path, name: str) -> Path:
    """The whole page (beyond the window: the answer is often below the form) as `tmp_path/name.png`."""
    out = tmp_path / f"{name}.png"
    shot = d.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
    out.write_bytes(base64.b64decode(shot["data"]))
    assert out.stat().st_size > 1000, f"no screenshot of {name}"
    return out


def bars(d) -> list[tuple[str, float]]:
    return [(li.get_attribute("data-label"), float(li.get_attribute("data-p")))
            for li in d.find_elements(by("CSS_SELECTOR"), "#bars li")]


def error_line(d) -> str:
    box = d.find_element(by("ID"), "error")
    return box.text if box.is_displayed() else ""


def png_file(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(array).save(path)
    return path


def close(a, b) -> None:
    assert [x for x, _ in a] == [x for x, _ in b]
    assert [p for _, p in a] == pytest.approx([p for _, p in b], abs=1e-9)


# ---------------------------------------------------------------------------------------------- HTTP level
def test_markdown_of_a_card_is_escaped_and_keeps_its_structure():
    card = ("# Model card: x\n\n- **Task**: `classify`\n- <script>alert(1)</script>\n\n| split | acc |\n|---|---|\n"
            "| test | 0.5 |\n\n```yaml\nname: <b>x</b>\n```\ntext & more <img src=x onerror=alert(1)>\n")
    out = markdown_html(card)
    assert "<script>" not in out and "<img" not in out and "<b>x" not in out
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in out and "&lt;img src=x onerror=alert(1)&gt;" in out
    assert "<h2>Model card: x</h2>" in out and "<li><strong>Task</strong>: <code>classify</code></li>" in out
    assert "<th scope=\"col\">split</th>" in out and "<td>0.5</td>" in out and "|---" not in out
    assert "<pre><code>name: &lt;b&gt;x&lt;/b&gt;</code></pre>" in out


def test_the_pages_and_their_files_are_served_with_a_strict_policy(runs):
    with TestClient(create_app([runs["classify-rnn"], runs["lm"]], ServeConfig(**LIMITS))) as c:
        for path in ("/", "/runs"):
            r = c.get(path)
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
            assert "script-src 'self'" in r.headers["content-security-policy"]
            assert "http" not in r.text.replace("http-equiv", "")  # no absolute URL of any kind
        for name, kind in (("app.js", "javascript"), ("common.js", "javascript"), ("runs.js", "javascript"),
                           ("style.css", "text/css")):
            r = c.get(f"/static/{name}")
            assert r.status_code == 200 and kind in r.headers["content-type"]
            code = r.text.replace('"http://www.w3.org/2000/svg"', "")  # SVG's namespace: a name, never fetched
            assert "http://" not in code and "https://" not in code and "//" + "cdn" not in code
        assert c.get("/static/nothing.js").status_code == 404
        models = c.get("/v1/models").json()["models"]
        assert {m["name"]: m["attends"] for m in models} == {"classify-rnn": True, "lm": False}
        runs_data = c.get("/v1/runs").json()["runs"]
        assert [r["name"] for r in runs_data] == ["classify-rnn", "lm"]
        first = runs_data[0]
        assert first["card_markdown"].startswith("# Model card: classify-rnn")
        assert "<h2>Model card: classify-rnn</h2>" in first["card_html"]
        loss = next(c for c in first["curves"] if c["metric"] == "loss")
        records = [json.loads(x) for x in (runs["classify-rnn"] / "metrics.jsonl").read_text().splitlines()]
        epochs = sorted({r["epoch"] for r in records if r.get("split") == "valid"})
        assert [e for e, _ in loss["series"]["valid"]] == epochs and set(loss["series"]) == {"train", "valid"}
        # the JSON API answers as before beside the page: the attention the page shows comes from it
        r = c.post("/v1/models/classify-rnn/predict", json={"texts": ["a great film"], "attention": True})
        assert r.status_code == 200 and [t for t, _ in r.json()["results"][0]["attention"]] == ["a", "great", "film"]


# ---------------------------------------------------------------------------------------------- in a browser
def test_the_pages_load_nothing_but_this_servers_files(driver, server):
    for path, ready in (("/", "#model:enabled"), ("/runs", "article.run svg")):
        driver.get(server + path)
        wait(driver, lambda d, ready=ready: d.find_elements(by("CSS_SELECTOR"), ready))
        urls = driver.execute_script(
            "return performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource'))"
            ".map(e => e.name).concat([...document.querySelectorAll('[src],[href]')]"
            ".map(e => e.src || e.href).filter(u => u && !u.startsWith('blob:') && !u.startsWith('data:')))")
        assert urls and all(u.startswith(server + "/") for u in urls), urls
        assert any(u.endswith("/static/app.js" if path == "/" else "/static/runs.js") for u in urls)
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors  # no script error, nothing refused by the policy


def test_classify_labels_bars_threshold_and_attention_equal_the_api(driver, server, predictors, tmp_path):
    open_model(driver, server, "classify-rnn")
    text = "the film was great and very funny"
    set_text(driver, text)
    set_option(driver, "threshold", 0.3)
    assert submit(driver, "classify") == "answered"
    expected = predictors["classify-rnn"].predict([text], top_k=2, threshold=0.3, attention=True)[0]
    close(bars(driver), expected["top_k"])
    assert driver.find_element(by("CSS_SELECTOR"), ".label-best").text == expected["label"]
    over = [li.get_attribute("data-label") for li in driver.find_elements(by("CSS_SELECTOR"), "#over-threshold li")]
    assert over == [label for label, _ in expected["labels"]]
    words = [(w.text, float(w.get_attribute("data-w")))
             for w in driver.find_elements(by("CSS_SELECTOR"), "#words .word")]
    close(words, expected["attention"])
    screenshot(driver, tmp_path, "classify")


def test_keyboard_alone_submits_ctrl_enter_in_a_text_and_enter_in_a_sentence(driver, server, predictors):
    from selenium.webdriver.common.keys import Keys

    open_model(driver, server, "classify-rnn")
    box = driver.find_element(by("ID"), "input")
    box.clear()
    box.send_keys("a dull and boring plot")
    assert submit(driver, "classify", lambda: box.send_keys(Keys.CONTROL, Keys.ENTER)) == "answered"
    close(bars(driver), predictors["classify-rnn"].predict(["a dull and boring plot"], top_k=2, attention=True)[0]
          ["top_k"])
    labelled = driver.execute_script("return [...document.querySelectorAll('#form input, #form textarea, #model')]"
                                     ".every(e => e.labels && e.labels.length > 0)")
    assert labelled  # every control has its label
    assert driver.find_element(by("ID"), "result").get_attribute("aria-live") == "polite"

    open_model(driver, server, "tag-rnn")
    box = driver.find_element(by("ID"), "input")
    box.send_keys("a dog sees the cat")
    assert submit(driver, "tag", lambda: box.send_keys(Keys.ENTER)) == "answered"
    assert [c.get_attribute("data-tag") for c in driver.find_elements(by("CSS_SELECTOR"), "#tagged li")] == \
        predictors["tag-rnn"].predict(["a dog sees the cat"])[0]["tags"]


def test_tag_chips_equal_the_api(driver, server, predictors, tmp_path):
    open_model(driver, server, "tag-rnn")
    sentence = "the big cat sees a red fox"
    set_text(driver, sentence)
    assert submit(driver, "tag") == "answered"
    expected = predictors["tag-rnn"].predict([sentence])[0]
    chips = driver.find_elements(by("CSS_SELECTOR"), "#tagged li")
    assert [c.find_element(by("CLASS_NAME"), "chip-word").text for c in chips] == expected["tokens"]
    assert [c.get_attribute("data-tag") for c in chips] == expected["tags"]
    assert [float(c.get_attribute("data-p")) for c in chips] == pytest.approx(expected["probabilities"], abs=1e-9)
    hues = {c.get_attribute("data-tag"): c.value_of_css_property("background-color") for c in chips}
    assert len(set(hues.values())) == len(hues)  # one colour per tag
    screenshot(driver, tmp_path, "tag")


def test_translate_with_a_chosen_beam_and_its_heatmap_equal_the_api(driver, server, predictors, tmp_path):
    open_model(driver, server, "translate")
    set_text(driver, "der hund sieht")
    set_option(driver, "beam", 3)
    assert submit(driver, "translate") == "answered"
    expected = predictors["translate"].predict(["der hund sieht"], beam=3, attention=True)[0]
    assert driver.find_element(by("ID"), "translation").text == expected["translation"]
    table = driver.find_element(by("ID"), "heatmap")
    head = [th.text for th in table.find_elements(by("CSS_SELECTOR"), "thead th.src")]
    assert head == [t.strip() for t in expected["src_tokens"]]
    rows = table.find_elements(by("CSS_SELECTOR"), "tbody tr")
    assert len(rows) == len(expected["attention"])
    cells = [[float(td.text) for td in row.find_elements(by("TAG_NAME"), "td")] for row in rows]
    assert np.allclose(cells, np.round(expected["attention"], 2), atol=0.006)
    screenshot(driver, tmp_path, "translate")


def test_lm_streams_the_same_text_as_the_api_with_the_same_controls(driver, server, predictors, tmp_path):
    open_model(driver, server, "lm")
    set_text(driver, "the cat")
    controls = {"max_new_tokens": 30, "temperature": 0.8, "top_k": 5, "top_p": 0.9, "seed": 3}
    for name, value in controls.items():
        set_option(driver, name, value)
    assert submit(driver, "lm") == "answered"
    result = driver.find_element(by("ID"), "result")
    expected = predictors["lm"].predict(["the cat"], **controls)[0]["text"]
    assert result.get_attribute("data-text") == expected
    assert driver.find_element(by("ID"), "generated").get_attribute("textContent") == expected
    assert float(result.get_attribute("data-first-ms")) <= float(result.get_attribute("data-ms"))
    screenshot(driver, tmp_path, "lm")


def test_image_upload_equals_the_api(driver, server, predictors, tmp_path):
    x, _ = load_digits_arrays()
    picture = png_file(tmp_path / "seven.png", x[7, 0])
    open_model(driver, server, "image")
    driver.find_element(by("ID"), "image").send_keys(str(picture))
    assert submit(driver, "image") == "answered"
    expected = predictors["image"].predict([picture.read_bytes()], top_k=10)[0]
    close(bars(driver), expected["top_k"])
    assert driver.find_element(by("CSS_SELECTOR"), ".label-best").text == expected["label"]
    screenshot(driver, tmp_path, "image")


def test_a_digit_drawn_on_the_canvas_equals_the_api_on_the_same_picture(driver, server, predictors, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains

    open_model(driver, server, "image")
    pad = driver.find_element(by("ID"), "pad")
    assert (pad.get_attribute("width"), pad.get_attribute("height")) == ("28", "28")
    size = pad.size["width"]
    chain = ActionChains(driver).move_to_element_with_offset(pad, 0, -size // 3).click_and_hold()
    for _ in range(6):  # a stroke down the middle: a one
        chain.move_by_offset(0, size // 9)
    chain.release().perform()
    assert submit(driver, "image-drawn") == "answered"
    png = base64.b64decode(driver.execute_script(
        "return document.getElementById('pad').toDataURL('image/png').split(',')[1]"))
    grey = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
    assert grey.shape == (28, 28) and grey.max() > 200 and grey.min() == 0  # white ink on black
    expected = predictors["image"].predict([png], top_k=10)[0]
    close(bars(driver), expected["top_k"])
    screenshot(driver, tmp_path, "image-drawn")


def test_caption_and_the_attention_of_each_word_equal_the_api(driver, server, runs, predictors, tmp_path):
    picture = runs["caption"].parent / "img" / "green.png"
    open_model(driver, server, "caption")
    driver.find_element(by("ID"), "image").send_keys(str(picture))
    assert submit(driver, "caption") == "answered"
    expected = predictors["caption"].predict([picture.read_bytes()], attention=True)[0]
    assert driver.find_element(by("ID"), "caption").text == expected["caption"]
    figures = driver.find_elements(by("CSS_SELECTOR"), "#word-attention figure")
    assert [f.find_element(by("TAG_NAME"), "figcaption").text for f in figures] == expected["words"]
    # each word's picture is the image darkened where the word did not look: they differ from word to word
    pixels = driver.execute_script("return [...document.querySelectorAll('#word-attention canvas')].map(c => "
                                   "Array.from(c.getContext('2d').getImageData(0, 0, 96, 96).data.slice(0, 4000)))")
    assert len(pixels) == len(expected["words"]) and any(max(p) > 0 for p in pixels)
    screenshot(driver, tmp_path, "caption")


def test_nearest_words_equal_the_api(driver, server, predictors, tmp_path):
    open_model(driver, server, "vectors")
    set_text(driver, "kitten - cat + dog")
    set_option(driver, "top_k", 5)
    assert submit(driver, "vectors") == "answered"
    close(bars(driver), predictors["vectors"].predict(["kitten - cat + dog"], top_k=5)[0]["neighbours"])
    screenshot(driver, tmp_path, "vectors")


def test_413_and_422_show_one_line_in_the_panel_and_the_server_serves_on(driver, server, predictors, tmp_path):
    open_model(driver, server, "classify-rnn")
    set_text(driver, "great " * 50)  # 300 characters: over max_chars
    assert submit(driver, "classify") == "error"
    assert error_line(driver) == "422 Unprocessable Entity: texts[0] has 300 characters; the limit is 200"
    assert driver.find_element(by("ID"), "result").text  # never a blank panel
    screenshot(driver, tmp_path, "error-422")

    set_text(driver, "x" * 25_000)  # a body over max_body_bytes
    assert submit(driver, "classify") == "error"
    assert error_line(driver).startswith("413") and "request body over the limit of 20,000 bytes" in error_line(driver)
    screenshot(driver, tmp_path, "error-413")

    open_model(driver, server, "translate")
    set_text(driver, "ein hund")
    set_option(driver, "beam", 9)
    assert submit(driver, "translate") == "error"
    assert error_line(driver).endswith("beam must be at most 4 on this server, got 9")

    open_model(driver, server, "image")
    assert submit(driver, "image") == "error"  # nothing chosen: said in place, nothing sent
    assert "choose a picture or draw a digit" in error_line(driver)
    not_image = tmp_path / "notes.png"
    not_image.write_text("not a picture", encoding="utf-8")
    driver.find_element(by("ID"), "image").send_keys(str(not_image))
    assert submit(driver, "image") == "error"
    assert error_line(driver).startswith("415") and "not an image this model can read" in error_line(driver)

    open_model(driver, server, "classify-rnn")
    set_text(driver, "a wonderful story")
    assert submit(driver, "classify") == "answered" and error_line(driver) == ""
    close(bars(driver), predictors["classify-rnn"].predict(["a wonderful story"], top_k=2, attention=True)[0]["top_k"])
    assert driver.execute_script("return fetch('/healthz').then(r => r.json())")["status"] == "ok"


def test_the_page_fits_a_phone_width(driver, server, tmp_path):
    # a phone's viewport (headless Chromium keeps a window at least 500 px wide: emulate the device instead)
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True})
    try:
        driver.get(server + "/")
        assert driver.execute_script("return window.innerWidth") == 390
        for name in ("translate", "classify-rnn"):
            open_model(driver, server, name)
            set_text(driver, "ein mann" if name == "translate" else "the acting was superb")
            assert submit(driver, "phone-" + name) == "answered"
            overflow = driver.execute_script(
                "const w = document.documentElement.clientWidth; return [document.documentElement.scrollWidth - w,"
                " document.getElementById('panel').getBoundingClientRect().right - w]")
            assert max(overflow) <= 0, f"{name}: the page is {overflow} px wider than a phone"
            screenshot(driver, tmp_path, f"phone-{name}")
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_runs_page_shows_each_run_with_its_card_and_curves(driver, server, runs, tmp_path):
    driver.get(server + "/runs")
    wait(driver, lambda d: len(d.find_elements(by("CSS_SELECTOR"), "article.run")) == len(runs))
    for name in runs:
        article = driver.find_element(by("ID"), f"run-{name}")
        assert article.find_element(by("CSS_SELECTOR"), ".card h2").text == f"Model card: {name}"
        assert article.find_elements(by("CSS_SELECTOR"), ".card table td")  # the metrics table
        loss = article.find_element(by("CSS_SELECTOR"), "figure.curve[data-metric='loss']")
        lines = loss.find_elements(by("CSS_SELECTOR"), "svg polyline")
        assert {p.get_attribute("class") for p in lines} >= {"valid"}
        records = [json.loads(x) for x in (runs[name] / "metrics.jsonl").read_text().splitlines()]
        epochs = {r["epoch"] for r in records if r.get("split") == "valid" and "loss" in r}
        valid = loss.find_element(by("CSS_SELECTOR"), "polyline.valid").get_attribute("points").split()
        assert len(valid) == len(epochs)
    assert not driver.find_elements(by("CSS_SELECTOR"), ".card script, .card img")
    screenshot(driver, tmp_path, "runs")
