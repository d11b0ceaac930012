"""The course outside the repository: capslib installed from a wheel (not
editable), as a student on Colab or with a copy of the course folder has it.

Data, runs and results must come from the working folder (or its parent,
the course root: notebooks run in ``notebooks/``), never from or into
site-packages, and missing data must be one line saying how to fix it.
"""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(args, **kwargs):
    return subprocess.run(args, capture_output=True, text=True, timeout=300, **kwargs)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """capslib built as a wheel (from a copy of the sources, so the checkout
    stays clean) and installed into a throwaway target folder."""
    tmp = tmp_path_factory.mktemp("installed")
    src = tmp / "src"
    src.mkdir()
    shutil.copy(ROOT / "pyproject.toml", src)
    shutil.copytree(ROOT / "capslib", src / "capslib",
                    ignore=shutil.ignore_patterns("__pycache__"))
    # No build isolation: it would fetch setuptools from the network.
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                  "-q", "-w", str(tmp / "wheels"), str(src)])
    assert built.returncode == 0, built.stderr
    wheel, = (tmp / "wheels").glob("capslib-*.whl")
    target = tmp / "site-packages"
    done = _run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                 str(target), str(wheel)])
    assert done.returncode == 0, done.stderr
    return target


def _python(target, cwd, code, home):
    env = {k: v for k, v in os.environ.items()
           if k not in ("CAPSLIB_DATA_DIR", "PYTHONPATH")}
    # The course's repository refuses at once: no real download in a test.
    env.update(PYTHONPATH=str(target), KERAS_HOME=str(home), TF_CPP_MIN_LOG_LEVEL="3",
               CAPSNET_COURSE_URL="http://127.0.0.1:9/", CAPSNET_COURSE_CACHE=str(home / "course"))
    if importlib.util.find_spec("jax"):  # imports in half the time; nothing here is backend's
        env["KERAS_BACKEND"] = "jax"
    return _run([sys.executable, "-c", code], cwd=cwd, env=env)


WHERE = """
import json, capslib, capslib.data, capslib.experiment, capslib.train
from pathlib import Path
print(json.dumps({
    "capslib": capslib.__file__,
    "data": str(capslib.data.find_data_dir()),
    "course_root": str(capslib.data.course_root()),
    "experiment_root": str(capslib.experiment.REPO_ROOT),
    "run_dir": str(Path(capslib.train.DEFAULT_RUN_DIR).resolve()),
    "results": str(capslib.experiment.committed_results("routing-class")),
    "metrics": str(capslib.experiment.committed_results("cpu-hour-tf", "metrics.json")),
}))
"""

NOTHING = """
import capslib.data, capslib.experiment
for find in (capslib.data.load_fashion_mnist, capslib.experiment.committed_results):
    try:
        find()
    except Exception as e:
        print(type(e).__name__, "|", e, "|", e.__cause__ is None and e.__suppress_context__)
"""


def test_installed_capslib_works_from_a_course_folder(installed, tmp_path):
    course = tmp_path / "course"
    shutil.copytree(ROOT / "data" / "fashion-mnist", course / "data" / "fashion-mnist")
    shutil.copytree(ROOT / "results" / "routing-class", course / "results" / "routing-class")
    (course / "results" / "cpu-hour-tf").mkdir()
    shutil.copy(ROOT / "results" / "cpu-hour-tf" / "metrics.json",
                course / "results" / "cpu-hour-tf")
    (course / "notebooks").mkdir()
    for cwd in (course, course / "notebooks"):  # the CLI's folder, a notebook's folder
        done = _python(installed, cwd, WHERE, tmp_path / "keras")
        assert done.returncode == 0, done.stderr[-3000:]
        where = json.loads(done.stdout.strip().splitlines()[-1])
        assert Path(where["capslib"]).is_relative_to(installed), where
        assert where["data"] == str(course / "data" / "fashion-mnist")
        assert where["course_root"] == where["experiment_root"] == str(course)
        assert where["run_dir"] == str(cwd / "runs" / "capsnet")
        assert where["results"] == str(course / "results" / "routing-class")
        assert where["metrics"] == str(course / "results" / "cpu-hour-tf")
    assert not (installed / "runs").exists() and not (installed / "data").exists()


def test_without_data_one_line_says_the_fix(installed, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    done = _python(installed, bare, NOTHING, tmp_path / "keras")
    assert done.returncode == 0, done.stderr[-3000:]
    data_error, results_error = done.stdout.strip().splitlines()[-2:]
    kind, message, clean = data_error.split(" | ")
    assert kind == "DataError" and clean == "True"
    assert str(bare / "data" / "fashion-mnist") in message
    for fix in ("Run from the course folder", "CAPSLIB_DATA_DIR=",
                "apt install dataset-fashion-mnist", "could not download data/fashion-mnist/",
                "on Colab or Kaggle check the runtime has internet"):
        assert fix in message
    kind, message, clean = results_error.split(" | ")
    assert kind == "FileNotFoundError" and clean == "True"
    assert str(bare / "results" / "routing-class" / "results.json") in message
    assert "could not download results/routing-class/" in message
    assert "python -m capslib experiment" in message


def _classroom(target, cwd, *args, env_extra=None):
    """``capsnet-classroom`` as the wheel installed it (its console script)."""
    env = {k: v for k, v in os.environ.items() if k not in ("CAPSNET_COURSE", "PYTHONPATH")}
    env.update(PYTHONPATH=str(target), TF_CPP_MIN_LOG_LEVEL="3", **(env_extra or {}))
    if importlib.util.find_spec("jax"):
        env["KERAS_BACKEND"] = "jax"
    return _run([str(target / "bin" / "capsnet-classroom"), *args], cwd=cwd, env=env)


def test_the_classroom_commands_run_from_an_installed_course(installed, tmp_path):
    """A teacher's copy of the course folder, the tools from the installed wheel: found from
    the folder or from --course; anywhere else, one line and exit 2."""
    course = tmp_path / "my-course"
    for name in ("notebooks", "student"):
        shutil.copytree(ROOT / name, course / name)
    (course / "classroom").mkdir()
    shutil.copy(ROOT / "classroom" / "nbgrader_config.py", course / "classroom")
    done = _classroom(installed, course / "notebooks", "export")
    assert done.returncode == 0 and (course / "classroom" / "grades.csv").is_file(), \
        done.stdout + done.stderr
    (course / "classroom" / "grades.csv").unlink()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = _classroom(installed, elsewhere, "--course", str(course), "export")
    assert done.returncode == 0 and (course / "classroom" / "grades.csv").is_file(), \
        done.stdout + done.stderr
    assert not (elsewhere / "grades.csv").exists()
    done = _classroom(installed, elsewhere, "grade")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert [line for line in done.stderr.splitlines() if "no course folder" in line], done.stderr
