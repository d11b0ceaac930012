"""`make lab` opens the student edition: JupyterLab on student/ alone, without nbgrader's
menus or server pages; `make teacher` opens the teacher's edition (notebooks/, nbgrader)."""
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from capslib.classroom import handout
from test_handout import VENV, Server, page_config

pytestmark = pytest.mark.backend_free

ROOT = Path(__file__).resolve().parents[1]
STUDENT_NOTEBOOKS = sorted(p.name for p in (ROOT / "student").glob("*.ipynb"))
STUDENT_CONFIG = ROOT / "jupyter" / "student"


def dry_run(target):
    if not shutil.which("make"):
        pytest.skip("no make")
    return subprocess.run(["make", "--no-print-directory", "-n", "-o", f"{VENV}/.installed",
                           target, f"VENV={VENV}"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout


def test_make_lab_serves_student_with_the_student_jupyter_settings():
    command = dry_run("lab")
    assert f'JUPYTER_CONFIG_PATH="{STUDENT_CONFIG}' in command, command
    assert f'--ServerApp.root_dir="{ROOT / "student"}"' in command, command
    assert "classroom" not in command and "/notebooks" not in command, command


def test_make_teacher_opens_the_teachers_edition():
    command = dry_run("teacher")
    assert command.startswith("cd classroom && PATH=") and "--ServerApp.root_dir=.." in command
    assert "--LabApp.default_url=/lab/tree/notebooks" in command, command


def test_the_student_settings_are_the_hand_outs():
    """One set of switches for both student editions (the repository's and the hand-out's)."""
    generated = handout.generated_files({})
    for name, text in generated.items():
        if name.startswith("jupyter/"):
            assert (STUDENT_CONFIG / Path(name).relative_to("jupyter")).read_text() == text, name
    assert sorted(p.relative_to(STUDENT_CONFIG).as_posix()
                  for p in STUDENT_CONFIG.rglob("*") if p.is_file()) == sorted(
        str(Path(name).relative_to("jupyter")) for name in generated if name.startswith("jupyter/"))


@pytest.mark.heavy
def test_make_lab_opens_the_student_edition_without_nbgrader(tmp_path):
    pytest.importorskip("jupyterlab")
    pytest.importorskip("nbgrader")  # installed here (the teacher's extra): still off
    with Server(tmp_path, ROOT, "lab", "-o", f"{VENV}/.installed") as server:
        # The folder served is student/: its notebooks, no teacher's file, no way up.
        status, _, body = server.get("/api/contents")
        assert status == 200, body
        names = sorted(item["name"] for item in json.loads(body)["content"])
        assert [n for n in names if n.endswith(".ipynb")] == STUDENT_NOTEBOOKS, names
        assert not {"notebooks", "conftest.py", "sanitize.cfg", "TEACHING.md"} & set(names)
        status, _, body = server.get("/api/contents/02_primary_capsules.ipynb")
        assert status == 200 and "BEGIN SOLUTION" not in body and "HIDDEN TESTS" not in body
        assert server.get("/api/contents/..%2Fnotebooks")[0] in (400, 403, 404)
        # nbgrader's server extensions answer nothing; its JupyterLab extension is disabled
        # (no Formgrader or Course List menu, no create-assignment toolbar).
        for page in ("/formgrader", "/assignments", "/courses", "/formgrader/api/students"):
            assert server.get(page)[0] == 404, page
        status, _, html = server.get("/lab")
        assert status == 200
        config = page_config(html)
        assert "@jupyter/nbgrader" in config["disabledExtensions"], config["disabledExtensions"]
        assert config["serverRoot"] == str(ROOT / "student")
        # The extension manager's list says the same: nbgrader's extension installed, off;
        # the others (widgets for the explorers) on.
        status, _, body = server.get("/lab/api/extensions")
        assert status == 200, body
        enabled = {e["name"]: e["enabled"] for e in json.loads(body)}
        assert enabled.get("jupyter-nbgrader") is False, enabled
        assert enabled.get("jupyter-widgets-jupyterlab-manager") is True, enabled
        log = server.output()
    assert "nbgrader" not in log.lower(), log
