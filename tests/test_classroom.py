"""The classroom edition: exercises in the notebooks, student copies made by
nbgrader, and a fixture class graded as a teacher would: submissions named the
way LMSs and browsers name them, collected, autograded with a runaway loop, a
dead kernel, a deleted check cell and a patched numpy.allclose among them,
feedback without hidden tests, and grades with a row for every student."""
import csv
import json
import os
import re
import statistics
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
from capslib.classroom import cli as classroom  # noqa: E402
from capslib.classroom import collect, export, grading  # noqa: E402

# The same under every Keras backend: not run again in the JAX pass (Makefile).
pytestmark = pytest.mark.backend_free

ASSIGNMENTS = classroom.assignments()

# Typical wrong answers, one per notebook where a student is likely to make them.
MISTAKES = {
    "ex1_2_shift_image": (
        "def shift_image(image, dy, dx):\n"
        "    return np.roll(image, (dy, dx), axis=(0, 1))"),
    "ex2_2_squash": (
        "def squash(s, axis=-1, epsilon=1e-7):\n"
        "    squared = ops.sum(ops.square(s), axis=axis, keepdims=True)\n"
        "    return squared / (1.0 + squared) * s / (ops.sqrt(squared) + epsilon)"),
    "ex3_2_routing": (
        "def routing(u_hat, iterations=3):\n"
        "    b = ops.zeros(ops.shape(u_hat)[:3])\n"
        "    for r in range(iterations):\n"
        "        c = ops.softmax(b, axis=1)\n"
        "        v = squash(ops.einsum('bij,bijk->bjk', c, u_hat))\n"
        "        if r < iterations - 1:\n"
        "            b = b + ops.einsum('bijk,bjk->bij', u_hat, v)\n"
        "    return v, c"),
    "ex4_2_margin_loss": (
        "def margin_loss(targets, lengths, m_plus=0.9, m_minus=0.1, lambda_=0.5):\n"
        "    present = lambda_ * targets * ops.square(ops.relu(m_plus - lengths))\n"
        "    absent = lambda_ * (1.0 - targets) * ops.square(ops.relu(lengths - m_minus))\n"
        "    return ops.sum(present + absent, axis=-1)"),
    "ex5_2_reconstruction_loss": (
        "def reconstruction_loss(images, reconstructions):\n"
        "    batch = ops.shape(images)[0]\n"
        "    diff = ops.reshape(images, (batch, -1)) - ops.reshape(reconstructions, (batch, -1))\n"
        "    return ops.mean(ops.square(diff), axis=-1)"),
}
# What the feedback must say about each mistake (the check's own words).
NAMED_IN_FEEDBACK = {
    "01_data": "wraps around like np.roll",
    "02_primary_capsules": "put epsilon inside the square root",
    "03_routing": "takes the softmax over the children",
    "04_margin_loss": "applies lambda_ to both terms",
    "05_decoder": "averages over the pixels",
}
# The student with mistakes also "fixes" a locked test cell; autograde must restore it.
TAMPERED_TEST = ("01_data", "ex1_2_shift_image_check")


def read(path):
    return json.loads(Path(path).read_text())


def meta(cell):
    return cell.get("metadata", {}).get("nbgrader", {})


def text(cell):
    return "".join(cell["source"])


def between(source, begin, end):
    """Lines strictly between two marker lines."""
    lines = source.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == begin)
    stop = next(i for i, line in enumerate(lines) if line.strip() == end)
    return lines[start + 1:stop]


# -- the exercises in the teacher's notebooks (fast) ----------------------------------------

def test_every_notebook_has_exercises_with_checks_and_questions():
    total = 0
    for name in ASSIGNMENTS:
        cells = read(classroom.NOTEBOOKS / f"{name}.ipynb")["cells"]
        solutions = [i for i, c in enumerate(cells) if meta(c).get("solution")]
        tests = [i for i, c in enumerate(cells) if meta(c).get("grade")]
        assert len(solutions) >= 2, f"{name}: fewer than two exercises"
        assert len(tests) == len(solutions), f"{name}: one graded check per exercise"
        for s, t in zip(solutions, tests):
            statement = text(cells[s - 1])
            assert statement.startswith("### Exercise"), f"{name}: statement before {meta(cells[s])}"
            assert "<summary>Hint</summary>" in statement, f"{name}: {statement[:40]} has no hint"
            assert t == s + 1, f"{name}: the check must follow the solution cell"
            check = text(cells[t])
            assert re.search(r"checks\.check_\w+\(", check), f"{name}: no visible check"
            assert "### BEGIN HIDDEN TESTS" in check, f"{name}: no hidden tests"
            assert meta(cells[t])["points"] > 0 and meta(cells[t])["locked"]
            assert "### BEGIN SOLUTION" in text(cells[s])
        questions = text(cells[-1])
        assert questions.startswith("## Questions to discuss"), f"{name}: no discussion questions"
        assert len(re.findall(r"^\d\. ", questions, re.M)) >= 2
        total += len(solutions)
    assert total >= 14


def test_student_copies_hold_no_solutions_hidden_tests_or_outputs():
    for name in ASSIGNMENTS:
        teacher = read(classroom.NOTEBOOKS / f"{name}.ipynb")["cells"]
        student = read(classroom.STUDENT / f"{name}.ipynb")["cells"]
        everything = "\n".join(text(c) for c in student)
        assert "BEGIN SOLUTION" not in everything and "HIDDEN TESTS" not in everything
        by_id = {meta(c).get("grade_id"): c for c in student if meta(c)}
        for cell in teacher:
            m = meta(cell)
            if m.get("solution"):
                answer = [ln for ln in between(text(cell), "### BEGIN SOLUTION", "### END SOLUTION")
                          if len(ln.strip()) > 8]
                stub = text(by_id[m["grade_id"]])
                assert "raise NotImplementedError()" in stub
                leaked = [ln for ln in answer if ln in stub]
                assert not leaked, f"{name} {m['grade_id']}: solution lines in the student copy: {leaked}"
            if m.get("grade"):
                hidden = [ln for ln in between(text(cell), "### BEGIN HIDDEN TESTS",
                                                "### END HIDDEN TESTS") if len(ln.strip()) > 8]
                assert not [ln for ln in hidden if ln in everything], f"{name}: hidden test leaked"
        assert all(not c.get("outputs") for c in student if c["cell_type"] == "code")
        # The tests' plumbing is the teacher's: no nbval marker or its reason in a student copy.
        assert "NBVAL_" not in everything and "# Reason:" not in everything, name


# -- nbgrader from the command line on a fixture class (slow) -----------------------------------

# The class: id, name as the LMS shows it, Canvas user id.
ROSTER = [("reference", "Rita Reference", "1001"), ("untouched", "Uma Untouched", "1002"),
          ("mistakes", "Max Mistakes", "1003"), ("runaway", "Rene Runaway", "1004"),
          ("cheater", "Carl Cheater", "1005"), ("deleter", "Dana Deleter", "1006"),
          ("crasher", "Cris Crasher", "1007"), ("absent", "Abe Absent", "1008")]
EARLY = [n for n in ASSIGNMENTS if n[:2] in ("01", "02", "03", "04", "05")]
RUNAWAY = ("04_margin_loss", "ex4_2_margin_loss",
           "def margin_loss(targets, lengths, m_plus=0.9, m_minus=0.1, lambda_=0.5):\n"
           "    while True:\n        pass")
CHEAT = ("04_margin_loss", "ex4_2_margin_loss",
         "import numpy\n"
         "numpy.allclose = lambda *args, **kwargs: True\n"
         "checks.check_margin_loss = lambda fn, seed=0: print('All 9 checks passed.')\n"
         "def margin_loss(targets, lengths, m_plus=0.9, m_minus=0.1, lambda_=0.5):\n"
         "    return 0.0")
DELETED = ("02_primary_capsules", "ex2_2_squash_check")
CRASH = ("01_data", "ex1_2_shift_image", "import os\nos._exit(1)")


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """A fresh course root: generate_assignment for every notebook (this fills the gradebook)."""
    root = tmp_path_factory.mktemp("course")
    classroom.generate_student_copies(root / "regenerated", root)
    return root


def submission(student, name):
    """What ``student`` hands in for ``name`` (None: nothing)."""
    nb = read(classroom.STUDENT / f"{name}.ipynb")
    teacher = read(classroom.NOTEBOOKS / f"{name}.ipynb")
    if student == "reference":
        return classroom.solve(nb, teacher)
    if student == "untouched":
        return nb if name in EARLY else None
    if student == "mistakes":
        if name not in EARLY:
            return None
        nb = classroom.solve(nb, teacher, MISTAKES)
        if name == TAMPERED_TEST[0]:
            for cell in nb["cells"]:
                if meta(cell).get("grade_id") == TAMPERED_TEST[1]:
                    cell["source"] = "pass  # my answer is right, the test is wrong"
        return nb
    for who, case in (("runaway", RUNAWAY), ("cheater", CHEAT), ("crasher", CRASH)):
        if student == who:
            return classroom.solve(nb, teacher, {case[1]: case[2]}) if name == case[0] else None
    if student == "deleter" and name == DELETED[0]:
        nb = classroom.solve(nb, teacher)
        nb["cells"] = [c for c in nb["cells"] if meta(c).get("grade_id") != DELETED[1]]
        return nb
    return None


def lms_file_name(student, name, index):
    """The names LMSs and browsers give: plain, browser copies, Canvas, Moodle."""
    sid, full, canvas = next(r for r in ROSTER if r[0] == student)
    last_first = "".join(reversed(full.lower().split()))
    if student == "reference":
        return [f"{sid}_{name}.ipynb", f"{sid}_{name} (1).ipynb", f"{sid}_{name}-Copy1.ipynb",
                f"{sid}_{name}_final.ipynb", f"{last_first}_{canvas}_55{index}_{name}.ipynb",
                f"{full}_{canvas}_assignsubmission_file_/{name}.ipynb",
                f"{name} - {sid}.ipynb", f"{sid}_{name}.ipynb"][index]
    if student == "mistakes":
        return f"{last_first}_LATE_{canvas}_77{index}_{name}.ipynb"
    if student == "runaway":
        return f"{full}_{canvas}_assignsubmission_file_{name}.ipynb"
    if student == "cheater":
        return f"{sid}_{name} (2).ipynb"
    if student == "deleter":
        return f"{sid}_{name}-Copy1.ipynb"
    if student == "crasher":
        return f"{sid}_{name}_final.ipynb"
    return f"{sid}_{name}.ipynb"


@pytest.fixture(scope="module")
def downloads(tmp_path_factory):
    """The class's files as downloaded: loose files, folders, a zip, and two strays."""
    folder = tmp_path_factory.mktemp("downloads")
    with zipfile.ZipFile(folder / "untouched.zip", "w") as zf:
        for index, name in enumerate(ASSIGNMENTS):
            for student, *_ in ROSTER:
                nb = submission(student, name)
                if nb is None:
                    continue
                filename = lms_file_name(student, name, index)
                if student == "untouched":
                    zf.writestr(filename, json.dumps(nb))
                else:
                    (folder / filename).parent.mkdir(parents=True, exist_ok=True)
                    (folder / filename).write_text(json.dumps(nb))
    (folder / "reading_notes.txt").write_text("not a notebook")
    (folder / "Untitled.ipynb").write_text(json.dumps(read(classroom.STUDENT / "01_data.ipynb")))
    return folder


@pytest.fixture(scope="module")
def collected(course, downloads):
    roster = course / "roster.csv"
    with open(roster, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "name", "canvas_id"])
        writer.writerows(ROSTER)
    return collect.collect(downloads, "ALL", course_root=course, roster=roster,
                           student=classroom.STUDENT)


@pytest.fixture(scope="module")
def graded(course, collected):
    """The class autograded (60 s per cell), with feedback and export."""
    os.environ.pop("CAPSLIB_GRADE_TIMEOUT", None)
    report = {(r["student_id"], r["assignment"]): r
              for r in grading.grade(ASSIGNMENTS, course_root=course, jobs=2)}
    pages = grading.feedback(ASSIGNMENTS, course_root=course)
    _, rows = export.export(ASSIGNMENTS, course_root=course)
    grading.print_report(list(report.values()))  # shown by pytest -rA / on failure
    return {"report": report, "pages": pages,
            "grades": {(r["student_id"], r["assignment"]): r for r in rows}}


def points(name):
    cells = read(classroom.NOTEBOOKS / f"{name}.ipynb")["cells"]
    return {meta(c)["grade_id"]: meta(c)["points"] for c in cells if meta(c).get("grade")}


@pytest.mark.heavy
def test_make_student_regenerates_the_copies_byte_for_byte(course):
    for name in ASSIGNMENTS:
        fresh = (course / "regenerated" / f"{name}.ipynb").read_bytes()
        assert fresh == (classroom.STUDENT / f"{name}.ipynb").read_bytes(), (
            f"student/{name}.ipynb is out of date: run `make student`")


@pytest.mark.heavy
def test_collect_maps_every_lms_name_and_reports_strays(collected):
    placed = {(r["student_id"], r["assignment"]) for r in collected if r["status"] == "collected"}
    expected = {(s, n) for s, *_ in ROSTER for n in ASSIGNMENTS if submission(s, n) is not None}
    assert placed == expected, (sorted(expected - placed), sorted(placed - expected))
    strays = {Path(r["file"]).name: r for r in collected if r["status"] == "not matched"}
    assert set(strays) == {"reading_notes.txt", "Untitled.ipynb"}, strays
    missing = {(r["student_id"], r["assignment"]) for r in collected if r["status"] == "missing"}
    assert {("absent", n) for n in ASSIGNMENTS} <= missing
    assert ("untouched", "06_training") in missing


@pytest.mark.heavy
def test_every_student_has_a_row_and_the_right_grade(graded):
    grades = graded["grades"]
    assert set(grades) == {(s, n) for s, *_ in ROSTER for n in ASSIGNMENTS}
    for name in ASSIGNMENTS:
        full = sum(points(name).values())
        assert grades[("reference", name)]["score"] == f"{full:g}", name
        assert grades[("absent", name)]["status"] == "missing"
        assert grades[("absent", name)]["max_score"] == f"{full:g}"
    pts = points("04_margin_loss")
    assert grades[("runaway", "04_margin_loss")]["score"] == f"{pts['ex4_1_capsule_lengths_check']:g}"
    assert grades[("cheater", "04_margin_loss")]["score"] == f"{pts['ex4_1_capsule_lengths_check']:g}"
    assert grades[("deleter", DELETED[0])]["score"] == f"{sum(points(DELETED[0]).values()):g}"
    # The kernel died in the crasher's answer: graded on what ran before it, and said so.
    assert grades[("crasher", CRASH[0])]["status"] == "graded"
    assert grades[("crasher", CRASH[0])]["score"] == f"{points(CRASH[0])['ex1_1_stratified_split_check']:g}"
    assert "kernel died in ex1_2_shift_image" in grades[("crasher", CRASH[0])]["notes"]
    assert grades[("cheater", "01_data")]["status"] == "missing"


@pytest.mark.heavy
def test_a_runaway_loop_costs_about_a_minute_and_the_class_is_still_graded(graded):
    report = graded["report"]
    runaway = report[("runaway", RUNAWAY[0])]
    assert runaway["timeouts"] >= 1 and "time limit in ex4_2_margin_loss_check" in runaway["notes"]
    honest = statistics.median(float(r["seconds"]) for (s, n), r in report.items()
                               if n == RUNAWAY[0] and s in ("reference", "mistakes", "untouched"))
    extra = float(runaway["seconds"]) - honest
    print(f"runaway student: {runaway['seconds']} s against a median of {honest:.0f} s")
    assert extra <= 100, f"the runaway loop cost {extra:.0f} s more than an honest student"


@pytest.mark.heavy
def test_tampering_is_reported_and_never_pays(graded):
    report = graded["report"]
    assert "replaces numpy.allclose" in report[("cheater", CHEAT[0])]["notes"]
    assert "replaces checks.check_margin_loss" in report[("cheater", CHEAT[0])]["notes"]
    assert f"locked cell {DELETED[1]} deleted" in report[("deleter", DELETED[0])]["notes"]
    assert f"locked cell {TAMPERED_TEST[1]} changed" in report[("mistakes", TAMPERED_TEST[0])]["notes"]
    for name in ASSIGNMENTS:  # an honest student's check cells are not "changed"
        assert report[("reference", name)]["notes"] == "", report[("reference", name)]


@pytest.mark.heavy
def test_untouched_copy_gets_zero_and_stops_at_its_first_exercise(graded, course):
    for name in EARLY:
        assert graded["grades"][("untouched", name)]["score"] == "0", name
        cells = read(course / "autograded" / "untouched" / name / f"{name}.ipynb")["cells"]
        errors = [(i, o) for i, c in enumerate(cells) if c["cell_type"] == "code"
                  for o in c.get("outputs", []) if o["output_type"] == "error"]
        first_check = next(i for i, c in enumerate(cells) if meta(c).get("grade"))
        i, error = errors[0]
        assert (i, error["ename"]) == (first_check, "NotImplementedError"), (
            f"{name}: first error {error['ename']} in cell {i}, expected NotImplementedError in "
            f"the first check (cell {first_check})")


@pytest.mark.heavy
def test_mistakes_get_partial_marks_and_feedback_names_them(graded, course):
    lost = {}
    for gid in {*MISTAKES, TAMPERED_TEST[1].removesuffix("_check")}:
        name = next(n for n in ASSIGNMENTS if f"{gid}_check" in points(n))
        lost[name] = lost.get(name, 0) + points(name)[f"{gid}_check"]
    for name in EARLY:
        row = graded["grades"][("mistakes", name)]
        assert float(row["score"]) == float(row["max_score"]) - lost.get(name, 0), name
    for name, phrase in NAMED_IN_FEEDBACK.items():
        html = (course / "feedback" / "mistakes" / name / f"{name}.html").read_text()
        assert phrase in html, f"{name}: the feedback does not say {phrase!r}"


@pytest.mark.heavy
def test_no_feedback_page_holds_a_hidden_test(graded):
    hidden = set()
    for name in ASSIGNMENTS:
        for cell in read(classroom.NOTEBOOKS / f"{name}.ipynb")["cells"]:
            if "### BEGIN HIDDEN TESTS" in text(cell):
                hidden |= {ln.strip() for ln in between(text(cell), "### BEGIN HIDDEN TESTS",
                                                          "### END HIDDEN TESTS")
                           if len(ln.strip()) > 25}
    assert len(graded["pages"]) >= len(ASSIGNMENTS)
    import html as html_lib
    for page in graded["pages"]:
        content = page.read_text()
        visible = html_lib.unescape(re.sub(r"<[^>]+>", "", content))
        assert "HIDDEN TESTS" not in visible, page
        leaked = [ln for ln in hidden if ln in visible]
        assert not leaked, f"{page}: hidden test lines {leaked[:2]}"


@pytest.mark.heavy
def test_an_edited_test_cell_gets_its_original_test_back(graded, course):
    name, gid = TAMPERED_TEST
    original = next(c for c in read(classroom.STUDENT / f"{name}.ipynb")["cells"]
                    if meta(c).get("grade_id") == gid)
    restored = next(c for c in read(course / "autograded" / "mistakes" / name / f"{name}.ipynb")["cells"]
                    if meta(c).get("grade_id") == gid)
    assert "check_shift_image" in text(restored) and "BEGIN HIDDEN TESTS" in text(restored)
    assert text(restored).startswith(text(original).split("\n")[0])
    assert any(o["output_type"] == "error" for o in restored["outputs"])


@pytest.mark.heavy
def test_a_deleted_check_cell_is_restored_and_graded(graded, course):
    name, gid = DELETED
    cells = read(course / "autograded" / "deleter" / name / f"{name}.ipynb")["cells"]
    restored = [c for c in cells if meta(c).get("grade_id") == gid]
    assert len(restored) == 1 and "check_squash" in text(restored[0])
    assert not any(o["output_type"] == "error" for o in restored[0].get("outputs", []))
