"""The pose explorer in a real browser: JupyterLab, headless Chromium, a slider moved.

Starts JupyterLab on loopback with a notebook in a temporary folder, runs
every cell from the Run menu, moves a pose slider with the keyboard and checks
that the reconstruction drawn on the page changes. Then it moves another slider
to a negative value and checks what is drawn at window widths from 1,024 to
1,920 px: every slider's readout whole (its text inside its box, its box inside
the slider and inside what its ancestors show, nothing drawn over it) and
saying the slider's value. Screenshots are saved to ``SCREENSHOT`` and, one
per width, ``explorer_<width>.png`` beside it. Needs Playwright (``pip install
playwright``, the dev extra; no ``playwright install``: it drives Debian's
``chromium``, which ``.ci/run`` installs); skipped with the reason when either
is missing.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.heavy  # the TensorFlow pass only (a kernel, a browser: ~1 min)

REPO = Path(__file__).resolve().parents[1]
# The course's notebook 07, copied into the temporary folder (never run in place) and run
# whole, as a student would. None: a small notebook generated below (setup + the explorer).
NOTEBOOK = REPO / "notebooks" / "07_interpretation.ipynb"
RUN_TIMEOUT_S = 300       # Run All Cells until the kernel is idle again (07: ~100 s, quick)
SCREENSHOT = Path(tempfile.gettempdir()) / "explorer.png"
WIDTHS = (1024, 1280, 1440, 1920)  # browser windows (px) where every readout must be whole
CHROMIUM = os.environ.get("CAPSLIB_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"

SETUP = """\
import os
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import keras
from capslib import build_capsnet, explore, pretrained
from capslib.data import load_fashion_mnist

if pretrained.available():
    model = pretrained.load_pretrained()
else:  # a small random CapsNet, its part-to-whole matrices scaled so that poses move
    keras.utils.set_random_seed(0)
    model = build_capsnet(conv_filters=32, primary_maps=8)
    model.digit_caps.W.assign(20 * model.digit_caps.W.numpy())
_, (x_test, y_test) = load_fashion_mnist()
"""
EXPLORER = """\
explorer = explore.pose_explorer(model, x_test[:100], y_test[:100])
explorer
"""


def _notebook(folder):
    """The notebook to run, written into ``folder``; returns its path relative to it."""
    if NOTEBOOK is not None:
        target = folder / "notebooks" / Path(NOTEBOOK).name
        target.parent.mkdir()
        shutil.copy(NOTEBOOK, target)
        return target.relative_to(folder).as_posix()
    import nbformat
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell("# Pose explorer"),
                nbformat.v4.new_code_cell(SETUP), nbformat.v4.new_code_cell(EXPLORER)]
    nbformat.write(nb, folder / "explorer.ipynb")
    return "explorer.ipynb"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(url, method="GET", timeout=5):
    with urllib.request.urlopen(urllib.request.Request(url, method=method),
                                timeout=timeout) as response:
        return response.status


def _lab_settings(config_dir):
    """No news or update checks (no network; no toast over the notebook), and every
    cell kept in the page (a long notebook draws only the visible ones by default)."""
    settings = config_dir / "lab" / "user-settings" / "@jupyterlab"
    for extension, name, values in [
            ("apputils-extension", "notification",
             {"fetchNews": "false", "checkForUpdates": False}),
            ("notebook-extension", "tracker", {"windowingMode": "none"})]:
        (settings / extension).mkdir(parents=True)
        (settings / extension / f"{name}.jupyterlab-settings").write_text(json.dumps(values))


@pytest.fixture
def browser_api():
    """Playwright's sync API, or a skip that says what is missing."""
    api = pytest.importorskip("playwright.sync_api", reason="needs playwright "
                              "(pip install playwright; the dev extra)")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"needs Chromium at {CHROMIUM} (Debian: apt-get install chromium; "
                    "or set CAPSLIB_CHROMIUM)")
    return api


@pytest.fixture
def lab(tmp_path, browser_api):
    """A JupyterLab server on loopback serving ``tmp_path/root``;
    yields (url, token, notebook path)."""
    pytest.importorskip("jupyterlab")
    pytest.importorskip("ipywidgets")
    root = tmp_path / "root"
    root.mkdir()
    notebook = _notebook(root)
    env = dict(os.environ)
    for name in ("CONFIG", "DATA", "RUNTIME"):  # no user settings, workspaces or kernels
        env[f"JUPYTER_{name}_DIR"] = str(tmp_path / f"jupyter-{name.lower()}")
    env["IPYTHONDIR"] = str(tmp_path / "ipython")
    _lab_settings(Path(env["JUPYTER_CONFIG_DIR"]))
    port, token = _free_port(), os.urandom(16).hex()
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}",
               "--ServerApp.ip=127.0.0.1", "--ServerApp.port_retries=0",
               f"--ServerApp.token={token}", f"--ServerApp.root_dir={root}"]
    if os.getuid() == 0:  # containers, CI runners
        command.append("--allow-root")
    log = open(tmp_path / "lab.log", "wb")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                              cwd=root, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if _request(f"{base}/api/status?token={token}") == 200:
                    break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail("JupyterLab did not start:\n"
                            + (tmp_path / "lab.log").read_text()[-3000:])
            time.sleep(0.5)
        yield base, token, notebook
    finally:
        try:  # stops the kernels too (they run in their own sessions)
            _request(f"{base}/api/shutdown?token={token}", method="POST")
            server.wait(timeout=20)
        except Exception:
            pass
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
        log.close()


# Each pose slider's readout as drawn: its box, its text's box, the slider's box, the
# part of the page its ancestors leave visible (the window cut by every ancestor that
# clips or scrolls its overflow), whether an ancestor had to scroll sideways to show
# it, and which of three points along its text show something else on top of it.
# Measured as a reader sees it: scrolled into view vertically, nothing scrolled sideways.
READOUTS_AS_DRAWN = """(explorer) => Array.from(
        explorer.querySelectorAll('.capslib-pose-slider')).map((slider, dim) => {
    const readout = slider.querySelector('.widget-readout');
    // (not <body>: its overflow is the window's, and its own box is 0 px high in Lab)
    const ancestors = [];
    for (let e = readout.parentElement; e && e !== document.body; e = e.parentElement) {
        ancestors.push(e);
    }
    readout.scrollIntoView({block: 'center', inline: 'nearest'});
    const scrolled = ancestors.filter((e) => e.scrollLeft > 0).map((e) => e.className);
    ancestors.forEach((e) => { e.scrollLeft = 0; });
    const rect = (r) => [r.left, r.top, r.right, r.bottom];
    const range = document.createRange();
    range.selectNodeContents(readout);
    let visible = [0, 0, window.innerWidth, window.innerHeight];
    for (const e of ancestors) {
        const style = getComputedStyle(e), r = e.getBoundingClientRect();
        if (style.overflowX !== 'visible') {
            visible[0] = Math.max(visible[0], r.left); visible[2] = Math.min(visible[2], r.right);
        }
        if (style.overflowY !== 'visible') {
            visible[1] = Math.max(visible[1], r.top); visible[3] = Math.min(visible[3], r.bottom);
        }
    }
    const box = readout.getBoundingClientRect(), text = range.getBoundingClientRect();
    const y = (box.top + box.bottom) / 2;
    const covered = [text.left + 1, (text.left + text.right) / 2, text.right - 1].filter((x) => {
        const hit = document.elementFromPoint(x, y);
        return !(hit && readout.contains(hit));
    }).map(Math.round);
    return {dim: dim, text: readout.textContent, display: getComputedStyle(readout).display,
            value: slider.querySelector('.noUi-handle').getAttribute('aria-valuetext'),
            box: rect(box), text_box: rect(text), widget: rect(slider.getBoundingClientRect()),
            visible: visible, scrolled: scrolled, covered: covered,
            scroll_width: readout.scrollWidth, client_width: readout.clientWidth};
})"""


def _readout_problems(readouts, width):
    """What is wrong with each readout as drawn (an empty list: every one whole)."""
    def inside(inner, outer):  # boxes as [left, top, right, bottom]; half a pixel spare
        return (inner[0] >= outer[0] - 0.5 and inner[1] >= outer[1] - 0.5
                and inner[2] <= outer[2] + 0.5 and inner[3] <= outer[3] + 0.5)

    problems = []
    for r in readouts:
        where = f"{width} px window, dim {r['dim']} ({r['text']!r})"
        expected = format(float(r["value"]), ".3f").replace("-", "\u2212")  # d3's minus sign
        if r["display"] == "none" or r["text"] != expected:
            problems.append(f"{where}: reads {r['text']!r}, the slider's value is {expected!r}")
        if r["scroll_width"] > r["client_width"]:
            problems.append(f"{where}: text {r['scroll_width']} px wide in a "
                            f"{r['client_width']} px box")
        if not inside(r["text_box"], r["box"]):
            problems.append(f"{where}: text {r['text_box']} outside its box {r['box']}")
        if not inside(r["box"], r["widget"]):
            problems.append(f"{where}: readout {r['box']} outside its slider {r['widget']}")
        if not inside(r["box"], r["visible"]):
            problems.append(f"{where}: readout {r['box']} outside the visible {r['visible']}")
        if r["scrolled"]:
            problems.append(f"{where}: shown only by scrolling sideways ({r['scrolled']})")
        if r["covered"]:
            problems.append(f"{where}: drawn over at x = {r['covered']}")
    return problems


IMAGE_BYTES = """async (img) => {
    const response = await fetch(img.src);
    return Array.from(new Uint8Array(await response.arrayBuffer())).join(",");
}"""


def test_pose_slider_redraws_the_reconstruction_in_jupyterlab(lab, browser_api):
    base, token, notebook = lab
    started = time.perf_counter()
    with browser_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            try:
                page.set_default_timeout(60_000)
                page.goto(f"{base}/lab/tree/{notebook}?token={token}")
                page.wait_for_selector(".jp-Notebook .jp-Cell")
                # Run All before the kernel is connected runs nothing: wait for it.
                page.wait_for_function(
                    "() => Array.from(document.querySelectorAll('.jp-StatusBar-TextItem'))"
                    ".some(e => e.textContent.trim().endsWith('| Idle'))")
                # Run > Run All Cells, through the menu bar as a user would.
                page.locator(".lm-MenuBar-item", has_text="Run").first.click()
                page.locator(".lm-Menu-item:visible", has_text="Run All Cells").first.click()
                image = page.locator("img.capslib-reconstruction").first
                image.wait_for(state="visible", timeout=RUN_TIMEOUT_S * 1000)
                page.wait_for_function(
                    "() => { const i = document.querySelector('img.capslib-reconstruction');"
                    " return i && i.src && i.complete && i.naturalWidth > 0; }")
                shown_at = time.perf_counter() - started
                # The kernel runs the cells after the explorer first; a slider's update
                # waits for them, so move it once every cell has run.
                page.wait_for_function(
                    "() => !Array.from(document.querySelectorAll('.jp-InputArea-prompt'))"
                    ".some(e => e.textContent.includes('*'))",
                    timeout=RUN_TIMEOUT_S * 1000)
                idle_at = time.perf_counter() - started
                before_src = image.get_attribute("src")
                before = image.evaluate(IMAGE_BYTES)
                slider = page.locator(".capslib-pose-slider").nth(3)
                readout = slider.locator(".widget-readout")
                value_before = readout.inner_text()
                slider.locator(".noUi-handle").focus()
                for _ in range(40):  # 40 steps of 1/200 of the slider's range
                    page.keyboard.press("ArrowRight")
                page.wait_for_function(
                    "(src) => document.querySelector('img.capslib-reconstruction').src !== src",
                    arg=before_src, timeout=20_000)
                page.wait_for_timeout(500)  # the last keypresses' images
                after = image.evaluate(IMAGE_BYTES)
                value_after = readout.inner_text()
                info = page.locator(".capslib-pose-explorer .widget-html").first.inner_text()
                page.locator(".capslib-pose-explorer").first.scroll_into_view_if_needed()
                page.screenshot(path=str(SCREENSHOT))
                # A negative readout: another slider whose range goes below 0, to its minimum.
                handles = page.locator(".capslib-pose-slider .noUi-handle")
                lowest = [float(handles.nth(d).get_attribute("aria-valuemin"))
                          for d in range(handles.count())]
                negative = next((d for d, low in enumerate(lowest) if low < 0 and d != 3), None)
                assert negative is not None, f"no slider's range goes below 0: {lowest}"
                handles.nth(negative).focus()
                page.keyboard.press("Home")
                page.wait_for_function(
                    "(d) => document.querySelectorAll('.capslib-pose-slider .widget-readout')"
                    "[d].textContent.startsWith('\u2212')", arg=negative, timeout=20_000)
                page.wait_for_timeout(500)  # its decode, and the info line after it
                explorer = page.locator(".capslib-pose-explorer").first
                drawn = {}
                for width in WIDTHS:
                    page.set_viewport_size({"width": width, "height": 1000})
                    page.wait_for_timeout(500)  # JupyterLab lays its panels out again
                    drawn[width] = explorer.evaluate(READOUTS_AS_DRAWN)
                    explorer.scroll_into_view_if_needed()
                    explorer.screenshot(path=str(SCREENSHOT.with_name(f"explorer_{width}.png")))
            except Exception:
                page.screenshot(path=str(SCREENSHOT))  # what the page showed
                raise
        finally:
            browser.close()
    elapsed = time.perf_counter() - started
    print(f"\nbrowser test: explorer shown after {shown_at:.1f} s, all cells run after "
          f"{idle_at:.1f} s, done in {elapsed:.1f} s; "
          f"dim 3 moved from {value_before} to {value_after}, dim {negative} to its minimum; "
          f"screenshots {SCREENSHOT}, explorer_{{{','.join(map(str, WIDTHS))}}}.png")
    number = lambda text: float(text.replace("\u2212", "-"))  # noqa: E731 (d3's minus sign)
    assert number(value_after) > number(value_before)
    assert after != before, "the reconstruction on the page did not change"
    assert "tweaked: [3]" in info, info  # the browser's other sliders left the pose alone
    for width, readouts in drawn.items():
        assert len(readouts) == len(lowest), f"{width} px: {len(readouts)} readouts"
        assert readouts[negative]["text"].startswith("\u2212"), readouts[negative]
    problems = {width: _readout_problems(readouts, width) for width, readouts in drawn.items()}
    assert not any(problems.values()), (
        "readouts not whole (problems per window width: "
        + ", ".join(f"{width} px: {len(found)}" for width, found in problems.items()) + ")\n"
        + "\n".join(p for found in problems.values() for p in found[:6]))
