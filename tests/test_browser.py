"""The pose explorer in a real browser: JupyterLab, headless Chromium, a slider moved.

Starts JupyterLab on loopback with a notebook in a temporary folder, runs
every cell from the Run menu, moves a pose slider with the keyboard and checks
that the reconstruction drawn on the page changes. A screenshot is saved to
``SCREENSHOT``. Needs Playwright (``pip install playwright``, the dev extra;
no ``playwright install``: it drives Debian's ``chromium``, which ``.ci/run``
installs); skipped with the reason when either is missing.
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
            except Exception:
                page.screenshot(path=str(SCREENSHOT))  # what the page showed
                raise
        finally:
            browser.close()
    elapsed = time.perf_counter() - started
    print(f"\nbrowser test: explorer shown after {shown_at:.1f} s, all cells run after "
          f"{idle_at:.1f} s, done in {elapsed:.1f} s; "
          f"dim 3 moved from {value_before} to {value_after}; screenshot {SCREENSHOT}")
    number = lambda text: float(text.replace("\u2212", "-"))  # noqa: E731 (d3's minus sign)
    assert number(value_after) > number(value_before)
    assert after != before, "the reconstruction on the page did not change"
    assert "tweaked: [3]" in info, info  # the browser's other sliders left the pose alone
