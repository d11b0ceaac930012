"""Grading a student cannot touch: a fixture class of honest students and students who try
each attack a real class tried, graded on notebook 02 in sandboxes, two at a time. Asserts
every grade, every attempt in the report, nothing outside the sandbox changed (checksums of
the course folder and the repository before and after), no process left, no hidden test,
hidden input or recorded answer in any feedback page. And the judge's rules (fast)."""
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("nbgrader")
from capslib import evidence  # noqa: E402
from capslib.classroom import cli as classroom  # noqa: E402
from capslib.classroom import grading, judge, sandbox  # noqa: E402

pytestmark = pytest.mark.backend_free

ROOT = Path(__file__).resolve().parents[1]
NAME = "02_primary_capsules"


def _meta(cell):
    return cell.get("metadata", {}).get("nbgrader", {})


def _answer(gid):
    teacher = classroom.read(classroom.NOTEBOOKS / f"{NAME}.ipynb")
    cell = next(c for c in teacher["cells"] if _meta(c).get("grade_id") == gid)
    return classroom.strip_solution_markers("".join(cell["source"]))


SQUASH = _answer("ex2_2_squash")
WRONG_SQUASH = "def squash(s, axis=-1, epsilon=1e-7):\n    return s"


def attacks(course):
    """student id -> {grade id: answer}; ``course`` is the course root the attacks aim at."""
    gradebook = course / "gradebook.db"
    other = course / "submitted" / "honest" / NAME / f"{NAME}.ipynb"
    return {
        # reads the teacher's source notebooks (the solutions and the hidden tests)
        "reader": {"ex2_2_squash": (
            f"import glob\nfound = glob.glob('{course}/source/*/*.ipynb') + glob.glob('{ROOT}/notebooks/*')\n"
            f"try:\n    open('{course / 'source' / NAME / (NAME + '.ipynb')}').read()\n"
            "except OSError as e:\n    print(type(e).__name__)\n" + WRONG_SQUASH)},
        # rewrites the gradebook, and another student's submission
        "writer": {"ex2_2_squash": (
            f"for path in ('{gradebook}', '{other}'):\n    try:\n"
            "        open(path, 'w').write('0')\n    except OSError as e:\n        print(type(e).__name__)\n"
            + WRONG_SQUASH)},
        # a process that outlives the kernel and writes the gradebook later
        "outliver": {"ex2_2_squash": (
            "import subprocess\nsubprocess.Popen(['sh', '-c', "
            f"'sleep 20; echo 4 > {gradebook}'], start_new_session=True)\n" + SQUASH)},
        # shadows builtins and patches the check under an alias
        "shadow": {"ex2_2_squash": (
            "all = lambda *a, **k: True\nlen = lambda *a: 12\nimport capslib.checks as cc\n"
            "cc.check_squash = lambda fn, **k: print('All 6 checks passed.')\n"
            "checks.check_squash = cc.check_squash\n" + WRONG_SQUASH)},
        # prints every cell's source (the hidden tests without their markers) as it runs
        "leaker": {"ex2_2_squash": (
            "get_ipython().events.register('pre_run_cell', lambda info: print(info.raw_cell))\n" + SQUASH)},
        # installs a package into the grading environment
        "installer": {"ex2_1_count_primary_capsules": (
            "get_ipython().run_line_magic('pip', 'install --no-input capsnet-not-a-package')\n"
            "def count_primary_capsules(height, width):\n    return 1152")},
        # a memory hog (3 GB against the 2 GB limit this class is graded with)
        "hog": {"ex2_2_squash": "hog = bytearray(3 * 1024**3)\n" + SQUASH},
        # a 50 MB print
        "printer": {"ex2_2_squash": "print('y' * 50_000_000)\n" + SQUASH},
        # reaches the network
        "caller": {"ex2_2_squash": (
            "import socket\ntry:\n    socket.create_connection(('93.184.216.34', 80), timeout=2)\n"
            "except OSError as e:\n    print(type(e).__name__)\n" + SQUASH)},
    }


# Points each student must get (out of 4: 1 for ex2_1, 3 for ex2_2).
EXPECTED = {"honest": 4, "reader": 1, "writer": 1, "outliver": 4, "shadow": 1, "leaker": 4,
            "installer": 3, "hog": 1, "printer": 4, "caller": 4}
# What the report must say of each attempt.
REPORTED = {
    "reader": ["tried to reach"],
    "writer": ["tried to reach"],
    "outliver": ["processes still running at the end (killed)", "started a program: sh -c sleep 20"],
    "shadow": ["replaces checks.check_squash"],
    "installer": ["started a program"],
    "hog": ["memory limit"],
    "printer": ["output cut in ex2_2_squash"],
    "caller": ["tried to connect to ('93.184.216.34', 80)"],
}


def _tree_digest(folder, skip=()):
    """{relative path: sha256} of every file under ``folder`` (less the skipped tops)."""
    out = {}
    for path in sorted(Path(folder).rglob("*")):
        rel = path.relative_to(folder)
        if rel.parts[0] in skip or not path.is_file() or "__pycache__" in rel.parts:
            continue
        out[rel.as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def attacked_class(tmp_path_factory):
    if sandbox.check_available():
        pytest.fail(f"no sandbox on this machine: {sandbox.check_available()}")
    course = tmp_path_factory.mktemp("sandbox-class") / "course"
    course.mkdir()
    shutil.copy(classroom.COURSE / "nbgrader_config.py", course)
    source = course / "source" / NAME
    source.mkdir(parents=True)
    shutil.copy(classroom.NOTEBOOKS / f"{NAME}.ipynb", source)
    grading.nbgrader("generate_assignment", NAME, "--force", "--log-level=WARN", course_root=course)
    released = classroom.read(course / "release" / NAME / f"{NAME}.ipynb")
    teacher = classroom.read(classroom.NOTEBOOKS / f"{NAME}.ipynb")
    plans = {"honest": None, **attacks(course)}
    for student, answers in plans.items():
        folder = course / "submitted" / student / NAME
        folder.mkdir(parents=True)
        (folder / f"{NAME}.ipynb").write_text(json.dumps(classroom.solve(released, teacher, answers)))
    # Run once so the gradebook exists, then checksum what must not change.
    before_repo = _tree_digest(ROOT, skip={".git", ".venv", "build", "runs", ".pytest_cache",
                                           "classroom"})
    before_submitted = _tree_digest(course / "submitted")
    before_source = _tree_digest(course / "source")
    start = time.perf_counter()
    # The sandboxes' folders in a temporary folder of this class's own: another test process
    # (pytest-xdist) may be grading beside it, with sandboxes of its own in /tmp. Not under
    # the course's top folder in /tmp: the audit reports a reach into /tmp only for a top
    # folder the sandbox does not show, and a sandbox shows the folders above its own.
    tmp = Path(tempfile.mkdtemp(prefix="capsnet-attack-class-"))
    saved, tempfile.tempdir = tempfile.tempdir, str(tmp)
    try:
        # 02 needs about 1 GB: a 2 GB limit makes the 3 GB hog hit it (the default is 6 GB).
        rows = grading.grade([NAME], course_root=course, jobs=2,
                             limits=sandbox.Limits(memory_mb=2048))
    finally:
        tempfile.tempdir = saved
    seconds = time.perf_counter() - start
    grading.print_report(rows)
    gradebook_after_grading = hashlib.sha256((course / "gradebook.db").read_bytes()).hexdigest()
    time.sleep(5)  # the outliver is gone (pgrep below); its gradebook write never came
    pages = grading.feedback([NAME], course_root=course)
    yield {"course": course, "rows": {r["student_id"]: r for r in rows}, "pages": pages,
           "seconds": seconds, "before_repo": before_repo, "before_submitted": before_submitted,
           "before_source": before_source, "gradebook": gradebook_after_grading, "tmp": tmp}
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.heavy
def test_every_grade_is_right_whatever_the_student_tried(attacked_class):
    rows = attacked_class["rows"]
    print(f"graded {len(rows)} students in {attacked_class['seconds']:.0f} s with 2 jobs")
    assert {s: rows[s]["status"] for s in EXPECTED} == {s: "graded" for s in EXPECTED}
    assert {s: float(rows[s]["score"]) for s in EXPECTED} == {s: float(v) for s, v in EXPECTED.items()}


@pytest.mark.heavy
def test_every_attempt_is_in_the_report(attacked_class):
    rows = attacked_class["rows"]
    for student, phrases in REPORTED.items():
        for phrase in phrases:
            assert phrase in rows[student]["notes"], (student, phrase, rows[student]["notes"])
    assert rows["honest"]["notes"] == "", rows["honest"]
    assert all(r["sandbox"].startswith("bubblewrap") for r in rows.values())


@pytest.mark.heavy
def test_nothing_outside_the_sandbox_changed_and_no_process_is_left(attacked_class):
    course = attacked_class["course"]
    assert _tree_digest(course / "submitted") == attacked_class["before_submitted"]
    assert _tree_digest(course / "source") == attacked_class["before_source"]
    assert _tree_digest(ROOT, skip={".git", ".venv", "build", "runs", ".pytest_cache",
                                    "classroom"}) == attacked_class["before_repo"]
    # The outliver's process was killed with its sandbox: the gradebook is as grading left it.
    assert hashlib.sha256((course / "gradebook.db").read_bytes()).hexdigest() == attacked_class["gradebook"]
    left = subprocess.run(["pgrep", "-f", "sleep 20; echo 4"], capture_output=True, text=True).stdout
    assert left.strip() == "", left
    left = [p.name for p in attacked_class["tmp"].iterdir() if p.name.startswith("capsnet-sandbox-")]
    assert left == [], left  # every sandbox's folder removed


@pytest.mark.heavy
def test_no_feedback_page_shows_a_hidden_test_its_inputs_or_the_recorded_answers(attacked_class):
    teacher = classroom.read(classroom.NOTEBOOKS / f"{NAME}.ipynb")
    hidden = []
    for cell in teacher["cells"]:
        source = "".join(cell["source"])
        if "### BEGIN HIDDEN TESTS" in source:
            region = source.split("### BEGIN HIDDEN TESTS")[1].split("### END HIDDEN TESTS")[0]
            hidden += [line.strip() for line in region.splitlines() if len(line.strip()) > 15]
    assert len(attacked_class["pages"]) == len(EXPECTED)
    import html as html_lib
    for page in attacked_class["pages"]:
        visible = html_lib.unescape(re.sub(r"<[^>]+>", "", page.read_text()))
        assert "answers recorded for the grader" not in visible and evidence.MIME not in visible
        assert not [line for line in hidden if line in visible], page
        assert os.path.getsize(page) < 3_000_000, f"{page}: {os.path.getsize(page)} bytes"
    leaker = next(p for p in attacked_class["pages"] if "/leaker/" in str(p)).read_text()
    assert "All 6 checks passed." in leaker  # what the check said is all its cell shows


@pytest.mark.heavy
def test_an_unchanged_class_is_not_graded_again_and_one_student_can_be(attacked_class):
    course = attacked_class["course"]
    verdict = course / grading.RUNS / "honest" / NAME / "verdict.json"
    stamp = verdict.stat().st_mtime_ns
    lines = []
    rows = grading.grade([NAME], course_root=course, jobs=2, students=["honest"], log=lines.append)
    assert verdict.stat().st_mtime_ns == stamp, "an unchanged submission was run again"
    assert [r["student_id"] for r in rows] == ["honest"] and rows[0]["score"] == "4"
    report = (course / "grading-report.csv").read_text()
    assert all(f"\n{s}," in report for s in EXPECTED), "the other students' rows were kept"


def test_grading_refuses_without_a_sandbox(monkeypatch, tmp_path):
    monkeypatch.setattr(sandbox, "bwrap_path", lambda: None)
    with pytest.raises(sandbox.SandboxUnavailable, match="--unsafe-no-sandbox"):
        grading.grade([NAME], course_root=tmp_path)


# -- the judge (fast) --------------------------------------------------------------------

def _record(exercise, **answers):
    return [{"output_type": "display_data", "metadata": {},
             "data": {evidence.MIME: json.dumps({"exercise": exercise, "answers": {
                 k: evidence._plain(v) for k, v in answers.items()}})}}]


def test_the_judge_compares_values_shapes_and_the_record_itself():
    want = evidence.read(_record("ex2_2_squash", a=[[0.5, 0.25]], zeros=[0.0, 0.0]))[0]
    gid = "ex2_2_squash_check"
    assert judge.judge(gid, _record("ex2_2_squash", a=[[0.50001, 0.25]], zeros=[0.0, 0.0]), want) == (True, "")
    assert not judge.judge(gid, _record("ex2_2_squash", a=[[0.6, 0.25]], zeros=[0.0, 0.0]), want)[0]
    assert "shape" in judge.judge(gid, _record("ex2_2_squash", a=[0.5, 0.25, 0.0], zeros=[0.0, 0.0]), want)[1]
    assert "not finite" in judge.judge(gid, _record("ex2_2_squash", a=[[float("nan"), 0.25]],
                                                    zeros=[0.0, 0.0]), want)[1]
    assert not judge.judge(gid, _record("ex2_1_count", a=[[0.5, 0.25]], zeros=[0.0, 0.0]), want)[0]
    assert not judge.judge(gid, _record("ex2_2_squash", a=[[0.5, 0.25]]), want)[0]
    two = _record("ex2_2_squash", a=[[0.5, 0.25]], zeros=[0.0, 0.0]) * 2
    assert "2 answer records" in judge.judge(gid, two, want)[1]
    assert "no answers" in judge.judge(gid, [], want)[1]


def test_the_teacher_notebooks_record_one_answer_per_check():
    for name in classroom.assignments():
        expected = judge.expected_answers(classroom.NOTEBOOKS / f"{name}.ipynb")
        teacher = classroom.read(classroom.NOTEBOOKS / f"{name}.ipynb")
        graded = {_meta(c)["grade_id"] for c in teacher["cells"] if _meta(c).get("grade")}
        assert set(expected) == graded, name


def test_a_forged_record_fails_its_cell_and_never_stops_the_grader():
    want = evidence.read(_record("ex2_2_squash", a=[[0.5, 0.25]]))[0]
    gid = "ex2_2_squash_check"
    forged = [{"shape": 5, "values": []}, {"shape": [1, 2], "values": [10**400, 1]},
              {"shape": [1, 2], "values": [True, 0.25]}, {"shape": [1, 2], "values": "ab"}]
    for answer in forged:
        outputs = [{"output_type": "display_data", "data": {evidence.MIME: json.dumps(
            {"exercise": "ex2_2_squash", "answers": {"a": answer}})}}]
        assert judge.judge(gid, outputs, want)[0] is False, answer
    deep = [{"output_type": "display_data", "data": {evidence.MIME: "[" * 100000 + "]" * 100000}}]
    assert judge.judge(gid, deep, want)[0] is False


def test_the_audit_log_is_read_safely_whatever_the_sandbox_made_of_it(tmp_path):
    box = sandbox.Sandbox(sandbox.Limits(), unsafe=True)
    try:
        box.audit_log.unlink(missing_ok=True)
        os.mkfifo(box.audit_log)  # a FIFO would block the grader for good
        assert box.attempts() == []
        box.audit_log.unlink()
        box.audit_log.symlink_to("/dev/zero")  # a link: never followed
        assert box.attempts() == []
    finally:
        box.close()
