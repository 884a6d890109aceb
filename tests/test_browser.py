"""What a person sees, in a real browser: Debian's headless Chromium (apt `chromium`), driven by playwright
(its own browser download cannot run here, so it is pointed at the system one).

- the report at a laptop's 1400 px: the page never scrolls sideways (every table scrolls inside its box),
  its text and the error gallery's captions are at a readable size;
- `mlflow ui`'s page of a finished training run shows the run;
- a served answer parses with the browser's own `JSON.parse` (bare NaN is not JSON).

Each test keeps a full-page screenshot under its tmp dir (docs/screenshots/ holds ones that were looked at).
"""

import io
import os
import shutil
import subprocess
import sys

import matplotlib
import mlflow
import numpy as np
import pytest
from helpers import require, subprocess_env, wait_for_port
from PIL import Image
from test_report import training_run
from test_serving import serve

from faceattr import config, experiment, plots, registry, serving
from faceattr.cli import main

WIDTH = 1400                 # a laptop's browser window
READABLE_PX = 7              # the rendered height of a caption's digits: ~10 px type (at 5 px nobody reads it)
SLICE_COLUMNS = ["split", "column", "slice", "n", "gated", "mse", "mae", "baseline_ratio", "accuracy_at_0_5",
                 "baseline_mse", "baseline_mse_pooled", "mean_label", "mean_prediction", "collapse_std_ratio"]


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium")
    require(chromium, "Debian's chromium is not installed (apt-get install chromium; .ci/run does)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require(False, "playwright is not installed (the test extra)")
    with sync_playwright() as driver:
        # --no-sandbox: Chromium's sandbox refuses to start as root, which CI runs as
        launched = driver.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield launched
        launched.close()


def post_from_the_browser(page, port: int, body: str) -> dict:
    """POST `body` to a served model's /invocations from the page's own origin and parse the answer with the
    browser's JSON.parse: {status, parsed, text}, or {status, error, text} when the browser refuses it."""
    page.goto(f"http://127.0.0.1:{port}/ping")   # same origin as /invocations
    return page.evaluate("""async (body) => {
        const response = await fetch('/invocations', {method: 'POST', body,
                                                      headers: {'Content-Type': 'application/json'}});
        const text = await response.text();
        try { return {status: response.status, parsed: JSON.parse(text), text}; }
        catch (error) { return {status: response.status, error: String(error), text}; }
    }""", body)


def caption_ink_height(png: bytes) -> int:
    """The height in image pixels of the gallery's shortest caption line: rows of dark ink (text is black,
    the test's photos are mid grey), grouped into lines; the first line is the figure's title."""
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
    inked = (pixels < 80).any(axis=1)
    lines, start = [], None
    for y, ink in enumerate([*inked, False]):
        if ink and start is None:
            start = y
        elif not ink and start is not None:
            lines.append(y - start)
            start = None
    assert len(lines) >= 3, f"no caption lines found: {lines}"
    return min(lines[1:])


def a_champion_with_a_gallery(tmp_path) -> tuple[str, str, bytes]:
    """An eyes experiment with two configurations over seeds; the first run registered and champion with a
    real error gallery (plots.error_gallery, as a training run logs it) and a wide slices table, a run of the
    second registered as the challenger with the same gallery."""
    client = mlflow.MlflowClient()
    experiment_id = client.create_experiment("eyes")
    runs = [training_run(client, experiment_id, dense, seed, 0.03 + seed / 100)
            for dense in ("64", "128") for seed in (0, 1)]
    champion = runs[0]
    photos = [np.full((32, 60, 3), 128, np.uint8)] * 16
    figure = plots.error_gallery(photos, [f"true 0.00\npredicted 0.{90 + i % 10}" for i in range(16)],
                                 "eyes: the validation photos it gets most wrong")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")   # as mlflow.log_figure writes it
    matplotlib.pyplot.close(figure)
    gallery = buffer.getvalue()
    (tmp_path / "error_gallery.png").write_bytes(gallery)
    client.log_artifact(champion, str(tmp_path / "error_gallery.png"), "plots")
    rows = [[split, "gender", g, 40, True, *np.linspace(0.01, 0.9, len(SLICE_COLUMNS) - 5)]
            for split in ("val", "test") for g in ("female", "male")]
    client.log_dict(champion, {"columns": SLICE_COLUMNS, "data": rows}, "slices.json")
    for k in range(12):   # a champion's facts: many long metric names
        client.log_metric(champion, f"val_accuracy_at_0_5.slice.evaluation_bucket_with_a_long_name.{k}", 0.5)
    client.create_registered_model("eyes")
    client.log_text(champion, "x", "model/placeholder.txt")
    client.create_model_version("eyes", f"{client.get_run(champion).info.artifact_uri}/model", run_id=champion)
    registry.record("eyes", "1", {registry.PREVIOUS: "none"})
    registry.move_champion("eyes", "1")
    challenger = runs[2]   # with the same gallery: the page shows both contenders' galleries
    client.log_artifact(challenger, str(tmp_path / "error_gallery.png"), "plots")
    client.log_text(challenger, "x", "model/placeholder.txt")
    client.create_model_version("eyes", f"{client.get_run(challenger).info.artifact_uri}/model", run_id=challenger)
    return experiment_id, champion, gallery


def test_report_reads_well_at_1400_px(mlflow_store, tmp_path, browser):
    _, _, gallery = a_champion_with_a_gallery(tmp_path)
    out = tmp_path / "report.html"
    assert main(["report", "eyes", "--out", str(out)]) == 0
    page = browser.new_page(viewport={"width": WIDTH, "height": 900})
    page.goto(out.as_uri())
    shown = page.evaluate("""() => {
        const root = document.documentElement;
        const img = document.querySelector('img[alt="challenger gallery"]');
        return {page: [root.scrollWidth, root.clientWidth],
                tables: [...document.querySelectorAll('table')].map(t => t.closest('.wide')
                        ? t.closest('.wide').getBoundingClientRect().right : t.getBoundingClientRect().right),
                fonts: [...document.querySelectorAll('td, th')].map(c => parseFloat(getComputedStyle(c).fontSize)),
                gallery: img && [img.clientWidth, img.naturalWidth]};
    }""")
    page.screenshot(path=str(tmp_path / "report-1400.png"), full_page=True)
    scroll_width, client_width = shown["page"]
    assert scroll_width <= client_width, f"the page scrolls sideways: {scroll_width} px wide in {client_width}"
    assert max(shown["tables"]) <= client_width                      # each table's box ends inside the page
    assert min(shown["fonts"]) >= 12
    shown_width, natural_width = shown["gallery"]
    rendered = caption_ink_height(gallery) * shown_width / natural_width
    assert rendered >= READABLE_PX, f"gallery captions are {rendered:.1f} px high at {WIDTH} px"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_mlflow_ui_shows_a_finished_training_run(mlflow_store, tmp_path, browser):
    experiment_id, run_id, _ = a_champion_with_a_gallery(tmp_path)
    env = subprocess_env(tmp_path, MLFLOW_TRACKING_URI=mlflow_store)
    log = tmp_path / "mlflow-ui.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", mlflow_store,
                                 "-h", "127.0.0.1", "-p", "0", "-w", "1"], cwd=tmp_path, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        port = wait_for_port(proc, "mlflow ui", timeout=300, log=log)
        page = browser.new_page(viewport={"width": WIDTH, "height": 900})
        page.goto(f"http://127.0.0.1:{port}/#/experiments/{experiment_id}/runs/{run_id}")
        page.get_by_text("eyes-64-s0").first.wait_for(timeout=120_000)   # the run's name, once the page loaded
        page.get_by_text("val_mse").first.wait_for(timeout=60_000)        # its metrics
        text = page.inner_text("body")
        page.screenshot(path=str(tmp_path / "mlflow-ui-run.png"), full_page=True)
        assert "Finished" in text and "model.dense_0" in text
    finally:
        os.killpg(proc.pid, 9)
        proc.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_served_answer_is_json_to_the_browser(mlflow_store, synthetic_cache, tmp_path, browser):
    """A ready crop has no per-eye values: the answer holds null for them. Before serving wrote null
    (the record branch), Chromium's JSON.parse rejected the whole answer over the bare NaN of eyes_left."""
    # region `eye` answers each eye of a whole photo too (eyes_left, eyes_right): a ready crop has neither
    outcome = experiment.train(config.load("eyes", {"region": "eye", "data.size": 20, "epochs": 1,
                                                    "train.verbose": 0}), register=False)
    crop = np.asarray(Image.new("RGB", (48, 48), (150, 120, 100)))
    body = f'{{"dataframe_records": [{{"image": "{serving.encode_image(crop)}", "kind": "crop"}}]}}'
    proc, port = serve(outcome.model_uri, tmp_path, subprocess_env(tmp_path, MLFLOW_TRACKING_URI=mlflow_store),
                       tmp_path / "serve.log")
    try:
        page = browser.new_page(viewport={"width": 900, "height": 120})
        answer = post_from_the_browser(page, port, body)
        page.set_content(f"<pre>{answer['text']}</pre>")
        page.screenshot(path=str(tmp_path / "served-answer.png"))
    finally:
        os.killpg(proc.pid, 9)
        proc.wait(timeout=30)
    assert answer["status"] == 200, answer["text"]
    assert "error" not in answer, f"the browser's JSON.parse refused the answer: {answer['error']}: {answer['text']}"
    (row,) = answer["parsed"]["predictions"]
    assert 0 <= row["eyes"] <= 1 and "eyes_left" in row and row["eyes_left"] is None and row["eyes_right"] is None
