"""The classroom edition: exercises in the notebooks, student copies made by
nbgrader, and a fixture class of three submissions graded from the command
line (autograde, generate_feedback, export)."""
import csv
import importlib.util
import json
import re
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("classroom", ROOT / "scripts" / "classroom.py")
classroom = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(classroom)

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
                                                "### END HIDDEN TESTS") if ln.strip()]
                assert not [ln for ln in hidden if ln in everything], f"{name}: hidden test leaked"
        assert all(not c.get("outputs") for c in student if c["cell_type"] == "code")


# -- nbgrader from the command line on a fixture class (slow) -----------------------------------

@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """A fresh course root: generate_assignment for every notebook (this fills the gradebook)."""
    root = tmp_path_factory.mktemp("course")
    classroom.generate_student_copies(root / "regenerated", root)
    return root


@pytest.fixture(scope="module")
def graded(course):
    """Three submissions made from the student copies, collected from a zip as an LMS gives
    them, autograded, with feedback and export."""
    for name in ASSIGNMENTS:
        archive = course / "downloaded" / name / "archive"
        archive.mkdir(parents=True)
        with zipfile.ZipFile(archive / "submissions.zip", "w") as zf:
            for student, nb in submissions(name).items():
                zf.writestr(f"{student}_{name}.ipynb", json.dumps(nb))
        classroom.nbgrader("zip_collect", name, "--force", course_root=course)
        classroom.nbgrader("autograde", name, "--force", course_root=course)
        classroom.nbgrader("generate_feedback", name, "--force", course_root=course)
    classroom.nbgrader("export", "--to", str(course / "grades.csv"), course_root=course)
    with open(course / "grades.csv", newline="") as f:
        return {(row["student_id"], row["assignment"]): row for row in csv.DictReader(f)}


def submissions(name):
    """The three students' notebooks for one assignment."""
    out = {}
    for student in ("reference", "untouched", "mistakes"):
        nb = read(classroom.STUDENT / f"{name}.ipynb")
        if student != "untouched":
            answers = MISTAKES if student == "mistakes" else None
            nb = classroom.solve(nb, read(classroom.NOTEBOOKS / f"{name}.ipynb"), answers)
        if student == "mistakes" and name == TAMPERED_TEST[0]:
            for cell in nb["cells"]:
                if meta(cell).get("grade_id") == TAMPERED_TEST[1]:
                    cell["source"] = "pass  # my answer is right, the test is wrong"
        out[student] = nb
    return out


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
def test_reference_answers_get_full_marks(graded):
    for name in ASSIGNMENTS:
        row = graded[("reference", name)]
        assert float(row["max_score"]) == sum(points(name).values()) > 0
        assert float(row["score"]) == float(row["max_score"]), name


@pytest.mark.heavy
def test_untouched_copy_gets_zero_and_stops_at_its_first_exercise(graded, course):
    for name in ASSIGNMENTS:
        assert float(graded[("untouched", name)]["score"]) == 0, name
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
    for name in ASSIGNMENTS:
        row = graded[("mistakes", name)]
        assert float(row["score"]) == float(row["max_score"]) - lost.get(name, 0), name
    total = sum(float(graded[("mistakes", n)]["score"]) for n in ASSIGNMENTS)
    assert 0 < total < sum(float(graded[("mistakes", n)]["max_score"]) for n in ASSIGNMENTS)
    for name, phrase in NAMED_IN_FEEDBACK.items():
        html = (course / "feedback" / "mistakes" / name / f"{name}.html").read_text()
        assert phrase in html, f"{name}: the feedback does not say {phrase!r}"


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
