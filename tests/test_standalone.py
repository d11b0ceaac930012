"""A student notebook as Colab or Kaggle runs it: no repository, only the course installed.

The wheel is built and installed into a fresh virtual environment outside the
repository (its dependencies, TensorFlow included, are this environment's, seen
through a ``.pth`` line: nothing is downloaded; the checkout's editable capslib is not
seen, as such a line does not run the ``.pth`` files of the folder it adds). A
``python -m http.server``-like server on 127.0.0.1 serves a folder laid out like the
repository's raw files and stands in for GitHub (``CAPSNET_COURSE_URL``). The solved
student copy of 01 runs in an empty folder; it must find, fetch and verify the data
from that server, keep it in ~/.cache/capsnet-course and write nothing into the folder.
A corrupted download and an offline runtime must each be one line.
"""
import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import threading
from pathlib import Path

import pytest

from capslib import course
from capslib.classroom import cli

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.heavy  # builds a wheel and runs a notebook (a minute on 2 cores)


def _run(args, **kwargs):
    return subprocess.run(args, capture_output=True, text=True, timeout=900, **kwargs)


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """A fresh venv (outside the repository) with the built wheel of capslib installed."""
    tmp = tmp_path_factory.mktemp("standalone")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "LICENSE", "LICENSE-TEXT.md"):
        if (ROOT / name).is_file():
            shutil.copy(ROOT / name, src)
    shutil.copytree(ROOT / "capslib", src / "capslib", ignore=shutil.ignore_patterns("__pycache__"))
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                  "-w", str(tmp / "wheels"), str(src)])
    assert built.returncode == 0, built.stderr
    wheel, = (tmp / "wheels").glob("capslib-*.whl")
    env_dir = tmp / "venv"
    made = _run([sys.executable, "-m", "venv", str(env_dir)])
    assert made.returncode == 0, made.stderr
    python = env_dir / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]
                     ).stdout.strip())
    # This environment's packages (TensorFlow, nbclient, ipykernel), after the venv's own.
    (site / "zz_course_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    done = _run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)])
    assert done.returncode == 0, done.stderr
    return python


class _Handler(http.server.SimpleHTTPRequestHandler):
    requests = []

    def log_message(self, format, *args):  # quiet; remember what was asked for
        _Handler.requests.append(self.path)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """127.0.0.1 serving ``good/`` (the repository's data/ and results/, as raw files) and
    ``bad/`` (the same with one file corrupted, as a broken mirror would serve it)."""
    site = tmp_path_factory.mktemp("raw")
    for path in course.manifest():
        for flavour in ("good", "bad"):
            target = site / flavour / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(ROOT / path)
    corrupt = site / "bad" / "data" / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz"
    corrupt.unlink()
    corrupt.write_bytes((ROOT / "data" / "fashion-mnist" / corrupt.name).read_bytes()[:-100])
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Handler, directory=str(site)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _env(home, url):
    """A student's runtime: its own HOME (so ~/.cache), the course URL, nothing of ours."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("CAPSLIB_DATA_DIR", "PYTHONPATH", "CAPSNET_COURSE", "CAPSNET_COURSE_CACHE",
                        "XDG_CACHE_HOME", "KERAS_HOME", "VIRTUAL_ENV", "JUPYTER_PATH",
                        "JUPYTER_CONFIG_PATH")}
    env.update(HOME=str(home), CAPSNET_COURSE_URL=url, CAPSLIB_PROFILE="quick")
    return env


RUN = """
import json, sys, nbformat
from nbclient import NotebookClient
path, folder = sys.argv[1:]
nb = nbformat.read(path, as_version=4)
nb.cells.append(nbformat.v4.new_code_cell(
    "import json, sys, capslib.data\\n"
    "print(json.dumps({'capslib': capslib.__file__, 'python': sys.executable,\\n"
    "                  'data': str(capslib.data.find_data_dir())}))"))
NotebookClient(nb, timeout=600, kernel_name="python3",
               resources={"metadata": {"path": folder}}).execute()
nbformat.write(nb, path)
"""


def _outputs(cell):
    texts = [o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream"]
    return "".join("".join(t) if isinstance(t, list) else t for t in texts)


def test_a_student_notebook_runs_from_an_empty_folder_with_data_from_the_course_url(
        venv, server, tmp_path):
    folder = tmp_path / "colab-content"  # what Colab calls /content: the notebook alone
    folder.mkdir()
    notebook = folder / "01_data.ipynb"
    cli.write(cli.solve(cli.read(ROOT / "student" / "01_data.ipynb"),
                        cli.read(ROOT / "notebooks" / "01_data.ipynb")), notebook)
    home = tmp_path / "home"
    _Handler.requests.clear()
    done = _run([str(venv), "-c", RUN, str(notebook), str(folder)], cwd=folder,
                env=_env(home, f"{server}/good"))
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    nb = json.loads(notebook.read_text())
    errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert not errors, errors
    where = json.loads(_outputs(nb["cells"][-1]).strip().splitlines()[-1])
    # The installed wheel in the fresh venv, not the checkout.
    assert Path(where["capslib"]).is_relative_to(venv.parents[1]), where
    assert not Path(where["capslib"]).is_relative_to(ROOT), where
    assert Path(where["python"]).parent == venv.parent, where
    # The data came from the server, into ~/.cache/capsnet-course, verified.
    cache = home / ".cache" / "capsnet-course" / "data" / "fashion-mnist"
    assert where["data"] == str(cache.resolve())
    for name in ("train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", "SHA256SUMS"):
        assert f"/good/data/fashion-mnist/{name}" in _Handler.requests, _Handler.requests
    assert all(not r.startswith("/good/data/capsnet") for r in _Handler.requests)
    text = "".join(_outputs(c) for c in nb["cells"])
    assert "data folder: data/fashion-mnist" in text
    assert text.count("matches: True") == 4 and "matches: False" not in text
    assert "SHA256SUMS lists the same files and digests as capslib.data.FILES: True" in text
    # The working folder holds the notebook and nothing the course wrote.
    assert sorted(p.name for p in folder.iterdir()) == ["01_data.ipynb"]


FIND = """
import json, capslib.data, capslib.experiment, capslib.pretrained
out = {}
try:
    capslib.data.load_fashion_mnist()
    out["data"] = "loaded"
except capslib.data.DataError as e:
    out["data"] = str(e)
if out["data"] == "loaded":
    out["shipped"] = capslib.pretrained.available()
    out["accuracy"] = capslib.pretrained.load_metrics()["test_accuracy"]
    out["results"] = str(capslib.experiment.committed_results("routing-class"))
    out["metrics"] = str(capslib.experiment.committed_results("gpu-h100-jax", "metrics.json"))
print(json.dumps(out))
"""


def _find(venv, cwd, home, url):
    env = _env(home, url)
    done = _run([str(venv), "-c", FIND], cwd=cwd, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_shipped_model_and_the_results_come_from_the_course_url(venv, server, tmp_path):
    home = tmp_path / "home"
    found = _find(venv, tmp_path, home, f"{server}/good")
    cache = home / ".cache" / "capsnet-course"
    assert found["data"] == "loaded" and found["shipped"] is True
    assert found["accuracy"] == json.loads(
        (ROOT / "data" / "capsnet-fashion-mnist" / "metrics.json").read_text())["test_accuracy"]
    assert found["results"] == str(cache / "results" / "routing-class")
    assert found["metrics"] == str(cache / "results" / "gpu-h100-jax")
    assert (cache / "results" / "routing-class" / "capsnet_r3" / "predictions.npz").is_file()
    assert not (tmp_path / "data").exists() and not (tmp_path / "results").exists()


def test_a_corrupted_download_is_refused_in_one_line(venv, server, tmp_path):
    home = tmp_path / "home"
    message = _find(venv, tmp_path, home, f"{server}/bad")["data"]
    assert "\n" not in message
    assert message.startswith(f"downloaded data/fashion-mnist/t10k-labels-idx1-ubyte.gz from "
                              f"{server}/bad/data/fashion-mnist/t10k-labels-idx1-ubyte.gz, but "
                              "it is not the course's file"), message
    cache = home / ".cache" / "capsnet-course" / "data" / "fashion-mnist"
    assert not (cache / "t10k-labels-idx1-ubyte.gz").exists()
    assert not list(cache.glob(".*part"))


def test_offline_is_one_line_that_says_to_check_the_internet(venv, tmp_path):
    message = _find(venv, tmp_path, tmp_path / "home", "http://127.0.0.1:9/")["data"]
    assert "\n" not in message
    assert message.startswith("could not download data/fashion-mnist/LICENSE from "
                              "http://127.0.0.1:9/data/fashion-mnist/LICENSE: "), message
    assert "on Colab or Kaggle check the runtime has internet" in message
