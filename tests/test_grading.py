"""The grading tools' parts that need no kernel: the tamper scan, the locked-cell
report, the feedback preprocessor, the time limits and the course's nbgrader
config (a config that fails to load is ignored by nbgrader without a word)."""
import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("nbgrader")
from capslib.classroom import grading  # noqa: E402
from capslib.classroom import hooks as course_hooks  # noqa: E402
from nbformat import from_dict  # noqa: E402

# The same under every Keras backend: not run again in the JAX pass (Makefile).
pytestmark = pytest.mark.backend_free


@pytest.mark.parametrize("source, finding", [
    ("import numpy\nnumpy.allclose = lambda *a, **k: True", "replaces numpy.allclose"),
    ("np.testing.assert_allclose = print", "replaces np.testing.assert_allclose"),
    ("checks.check_margin_loss = lambda fn: None", "replaces checks.check_margin_loss"),
    ("import builtins\nbuiltins.abs = lambda x: 0", "replaces builtins.abs"),
    ("__builtins__['all'] = lambda x: True", "uses __builtins__"),
    ("setattr(np, 'allclose', lambda *a: True)", "calls setattr()"),
    ("import importlib\nimportlib.reload(checks)", "calls importlib.reload()"),
    ("class Fake:\n    def __eq__(self, other):\n        return True", "defines __eq__"),
])
def test_tamper_scan_names_what_could_fake_a_verdict(source, finding):
    found = grading.tamper_findings(source)
    assert any(f.startswith(finding) for f in found), found


@pytest.mark.parametrize("source", [
    "def margin_loss(t, lengths, m_plus=0.9):\n    x = ops.relu(m_plus - lengths)\n    return ops.sum(x, axis=-1)",
    "import numpy as np\nresult = np.allclose(1, 1)",  # calling is fine; replacing is not
    "model.trainable = False\nself_x = 3",
    "def broken(:\n",  # a syntax error fails on its own
])
def test_tamper_scan_leaves_honest_code_alone(source):
    assert grading.tamper_findings(source) == []


def _nb(*cells):
    return {"cells": [copy.deepcopy(c) for c in cells], "metadata": {}, "nbformat": 4,
            "nbformat_minor": 5}


def _cell(source, grade_id=None, locked=False, grade=False, solution=False):
    cell = {"cell_type": "code", "source": source, "metadata": {}, "outputs": [],
            "execution_count": None}
    if grade_id:
        cell["metadata"]["nbgrader"] = {"grade_id": grade_id, "locked": locked, "grade": grade,
                                        "solution": solution, "points": 1 if grade else 0}
    return cell


def test_locked_cell_report_names_changed_and_deleted_cells_only():
    released = _nb(_cell("setup()", "setup", locked=True),
                   _cell("def f():\n    raise NotImplementedError()", "answer", solution=True),
                   _cell("check(f)", "check", locked=True, grade=True),
                   _cell("check2(f)", "check2", locked=True, grade=True))
    honest = copy.deepcopy(released)
    honest["cells"][1]["source"] = "def f():\n    return 1"
    assert grading.locked_cell_changes(honest, released) == []
    tampered = copy.deepcopy(honest)
    tampered["cells"][2]["source"] = "pass"
    del tampered["cells"][3]
    assert grading.locked_cell_changes(tampered, released) == [("check", "changed"),
                                                               ("check2", "deleted")]


def test_submission_tampering_scans_only_what_the_student_wrote():
    released = _nb(_cell("import numpy as np\nnp.random.seed(0)", "setup", locked=True),
                   _cell("raise NotImplementedError()", "answer", solution=True))
    sub = copy.deepcopy(released)
    sub["cells"][1]["source"] = "np.allclose = lambda *a, **k: True\ndef f():\n    return 0"
    sub["cells"].append(_cell("checks.check_f = print"))
    assert grading.submission_tampering(sub, released) == [
        ("answer", "replaces np.allclose"), ("cell 2", "replaces checks.check_f")]


def test_feedback_preprocessor_removes_hidden_tests_and_their_tracebacks():
    source = ("checks.check_f(f)\n### BEGIN HIDDEN TESTS\nassert f(2) == 4, 'f(2) must be 4'\n"
              "### END HIDDEN TESTS")
    cell = from_dict(_cell(source, "check", locked=True, grade=True))
    cell.outputs = [from_dict({"output_type": "error", "ename": "AssertionError",
                               "evalue": "f(2) must be 4",
                               "traceback": ["Traceback", "----> 3 assert f(2) == 4, 'f(2) must be 4'"]})]
    cell, _ = course_hooks.HideHiddenTests().preprocess_cell(cell, {}, 0)
    assert cell.source == "checks.check_f(f)"
    assert cell.outputs[0].traceback == ["AssertionError: f(2) must be 4"]


def test_time_limits(monkeypatch):
    monkeypatch.delenv("CAPSLIB_GRADE_TIMEOUT", raising=False)
    assert course_hooks.cell_timeout({"source": "while True:\n    pass"}) == 60
    monkeypatch.setenv("CAPSLIB_GRADE_TIMEOUT", "20")
    assert course_hooks.cell_timeout({"source": "x = 1"}) == 20
    long_cells = course_hooks.long_running_sources()
    assert len(long_cells) >= 3, "06's training, 07's model and 08's experiment are tagged"
    training = next(s for s in long_cells if "capslib.train.train(config" in s)
    assert course_hooks.cell_timeout({"source": training}) == course_hooks.LONG_CELL_TIMEOUT
    # The teacher's long cell has nbval's marker, the student copy's has not: both are long.
    teacher = next(c for c in json.loads((ROOT / "notebooks" / "06_training.ipynb").read_text())["cells"]
                   if course_hooks.LONG_TAG in c["metadata"].get("tags", []))
    assert "NBVAL" in course_hooks._source(teacher)
    for source in (course_hooks._source(teacher),
                   course_hooks.without_test_plumbing(course_hooks._source(teacher))):
        assert course_hooks.cell_timeout({"source": source}) == course_hooks.LONG_CELL_TIMEOUT
    # A student who edits a long cell loses its allowance.
    assert course_hooks.cell_timeout({"source": training + "\nwhile True: pass"}) == 20
    monkeypatch.setenv("CAPSLIB_GRADE_TIMEOUT", "soon")
    with pytest.raises(SystemExit, match="whole number of seconds"):
        course_hooks.cell_timeout({"source": "x"})


def test_course_config_loads_without_errors_or_unrecognised_settings(tmp_path):
    course = tmp_path / "classroom"
    course.mkdir()
    shutil.copy(ROOT / "classroom" / "nbgrader_config.py", course / "nbgrader_config.py")
    bin_dir = Path(sys.executable).parent
    done = subprocess.run([str(bin_dir / "nbgrader"), "db", "student", "list", "--log-level=DEBUG"],
                          cwd=course, capture_output=True, text=True,
                          env={"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(Path.home())})
    log = done.stdout + done.stderr
    assert "Exception while loading config file" not in log, log
    assert "not recognized" not in log, log
    assert "Loaded config file" in log and "classroom/nbgrader_config.py" in log, log[-2000:]
    assert (course / "gradebook.db").exists() and not (tmp_path / "gradebook.db").exists()


def test_feedback_shows_a_graded_cell_only_as_its_check_said_it():
    from capslib import evidence
    source = ("checks.check_f(f)\n### BEGIN HIDDEN TESTS\n_x = np.array([0.123456, 7])\n"
              "_record('ex_f', y=f(_x))\n### END HIDDEN TESTS")
    nb = from_dict({"cells": [_cell(source, "check", locked=True, grade=True), _cell("print(1)")],
                    "metadata": {"widgets": {"application/vnd.jupyter.widget-state+json": {}}},
                    "nbformat": 4, "nbformat_minor": 5})
    nb.cells[0].outputs = [
        from_dict({"output_type": "stream", "name": "stdout", "text": "✓ f works\nAll 1 checks passed.\n"}),
        from_dict({"output_type": "stream", "name": "stdout",  # a student's hook, disguised
                   "text": "X1819hbnAuYXJyYXko\n"}),
        from_dict({"output_type": "display_data", "metadata": {},
                   "data": {evidence.MIME: "{}", "text/plain": "answers recorded for the grader"}}),
        from_dict({"output_type": "display_data", "metadata": {},
                   "data": {"text/html": "<script>alert(1)</script>", "text/plain": "<HTML>"}})]
    nb.cells[1].outputs = [  # a student's own cell: hidden lines and active content go, the rest stays
        from_dict({"output_type": "stream", "name": "stdout", "text": "_x = np.array([0.123456, 7])\n"}),
        from_dict({"output_type": "display_data", "metadata": {},
                   "data": {"application/javascript": "alert(1)"}}),
        from_dict({"output_type": "stream", "name": "stdout", "text": "z" * 2_000_000})]
    nb, _ = course_hooks.HideHiddenTests().preprocess(nb, {})
    assert [o.get("text") for o in nb.cells[0].outputs] == ["✓ f works\nAll 1 checks passed.\n"]
    texts = [o.get("text", "") for o in nb.cells[1].outputs]
    assert not any("0.123456" in t for t in texts) and any("it showed a hidden test" in t for t in texts)
    assert any("output cut here" in t for t in texts) and sum(map(len, texts)) < 1_100_000
    assert not any("application/javascript" in o.get("data", {}) for o in nb.cells[1].outputs)
    assert "widgets" not in nb.metadata


def test_tampering_sees_aliases_rebound_names_and_library_copies():
    found = grading.tamper_findings("class checks:\n    pass\nimport capslib.evidence as ev\n"
                                    "ev.record = print\nfrom capslib.ops import squash")
    assert found == ["imports squash from capslib.ops (the course's own implementation)",
                     "rebinds checks (a name the check cells use)", "replaces ev.record"]
    # The checks' references (a private helper, a notebook's module) and the course's modules.
    found = grading.tamper_findings(
        "from capslib.checks import nb03_routing, check_routing\nimport capslib.routing as r\n"
        "c = checks._np_routing(u)\nd = nb03_routing._np_routing(u)\nfrom capslib import checks")
    assert found == ["imports capslib.routing (the course's own implementation)",
                     "imports nb03_routing from capslib.checks (the checks' reference answers)",
                     "uses checks._np_routing (the checks' reference answers)"]
    assert grading.tamper_findings("from capslib.checks import check_routing, CheckFailed\n"
                                   "checks.check_routing(routing)") == []


def test_the_longest_notebooks_are_run_first(tmp_path):
    """One pool of jobs for the whole class: a notebook that trains starts before the short
    ones (else it runs alone at the end, the other jobs idle); a re-grade uses the last time."""
    def teacher(long_cells):
        return {"cells": [{"cell_type": "code", "source": f"train({k})",
                           "metadata": {"tags": [course_hooks.LONG_TAG]}} for k in range(long_cells)]
                + [{"cell_type": "code", "source": "x = 1", "metadata": {}}]}
    short = grading._expected_seconds(tmp_path, "02_primary_capsules", "ana", teacher(0))
    trains = grading._expected_seconds(tmp_path, "08_does_routing_help", "ana", teacher(2))
    assert trains > short
    verdict = grading._verdict_path(tmp_path, "ana", "02_primary_capsules")
    verdict.parent.mkdir(parents=True)
    grading._write_json(verdict, {"seconds": 400.0})
    assert grading._expected_seconds(tmp_path, "02_primary_capsules", "ana", teacher(0)) == 400.0


def test_test_plumbing_is_the_nbval_marker_and_its_reason_only():
    source = ("# NBVAL_IGNORE_OUTPUT\n# Reason: a timing.\nx = 1\n# Reason: kept, not under a marker\n"
              "# NBVAL_SKIP\ny = 2  # NBVAL_IGNORE_OUTPUT in a comment stays")
    assert course_hooks.without_test_plumbing(source) == (
        "x = 1\n# Reason: kept, not under a marker\ny = 2  # NBVAL_IGNORE_OUTPUT in a comment stays")
