"""Grading a class with nbgrader, without losing or misjudging a student.

Used by ``capsnet-classroom grade|feedback|export`` (see TEACHING.md):

- ``grade``: ``nbgrader autograde`` per notebook with a per-cell time limit
  (``course_hooks.cell_timeout``: 60 s by default), then a report per student
  and notebook: score, cells stopped at the time limit, a kernel that died (the
  notebook could not be graded: named, the rest of the class is still graded),
  locked cells the student changed or deleted (restored before grading), and
  code that patches libraries or the checks (``tamper_findings``).
- ``feedback``: ``nbgrader generate_feedback`` (hidden tests removed by the
  course's feedback preprocessor) and a check that no page holds one.
- ``export``: ``grades.csv`` with one row per roster student and notebook,
  ``missing`` where nothing was submitted (never a silent 0).
"""
import ast
import csv
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from capslib.classroom.paths import COURSE  # noqa: E402
from capslib.classroom.export import REPORT  # noqa: E402

# Names whose rebinding by a student's cell can fake a check's verdict.
_WATCHED_MODULES = {"np", "numpy", "keras", "ops", "checks", "capslib", "math", "builtins",
                    "tf", "tensorflow", "jax", "sys", "importlib"}
_WATCHED_CALLS = {"setattr", "delattr", "reload", "exec", "eval", "__import__"}
_COMPARISON_DUNDERS = {"__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__", "__sub__",
                       "__rsub__", "__abs__", "__bool__", "__float__", "__array__"}


def _source(cell):
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def _meta(cell):
    return cell.get("metadata", {}).get("nbgrader", {})


def _dotted(node):
    """``numpy.testing.assert_allclose`` for an Attribute chain, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def tamper_findings(source):
    """What in ``source`` could fake a verdict: rebinding an attribute of numpy,
    keras, capslib, the checks or builtins; ``setattr``/``reload``/``exec``;
    comparison operators defined on a returned object; ``__builtins__``.

    Returns a list of short phrases (empty for honest code); code that does not
    parse returns nothing here (it fails on its own when run).
    """
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    found = []
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        elif isinstance(node, ast.Delete):
            targets = node.targets
        for target in targets:
            name = _dotted(target) if isinstance(target, ast.Attribute) else None
            if name and name.split(".")[0] in _WATCHED_MODULES:
                found.append(f"replaces {name}")
            if isinstance(target, ast.Subscript) and _dotted(target.value) in (
                    "__builtins__", "builtins.__dict__", "sys.modules", "vars(builtins)"):
                found.append(f"replaces an entry of {_dotted(target.value)}")
        if isinstance(node, ast.Call):
            name = _dotted(node.func)
            if name and name.split(".")[-1] in _WATCHED_CALLS:
                found.append(f"calls {name}()")
        if isinstance(node, ast.Name) and node.id == "__builtins__":
            found.append("uses __builtins__")
        if isinstance(node, ast.FunctionDef) and node.name in _COMPARISON_DUNDERS:
            found.append(f"defines {node.name} (a result that compares as anything)")
    return sorted(set(found))


def locked_cell_changes(submitted_nb, released_nb):
    """Locked cells of the hand-out that the submission changed or deleted,
    as ``[(grade_id or cell index, "changed" | "deleted")]`` (autograde restores them)."""
    by_id = {_meta(c)["grade_id"]: c for c in submitted_nb["cells"] if _meta(c).get("grade_id")}
    changes = []
    for cell in released_nb["cells"]:
        meta = _meta(cell)
        if not meta.get("locked") or not meta.get("grade_id"):
            continue
        mine = by_id.get(meta["grade_id"])
        if mine is None:
            changes.append((meta["grade_id"], "deleted"))
        elif _source(mine).strip() != _source(cell).strip():
            changes.append((meta["grade_id"], "changed"))
    return changes


def submission_tampering(submitted_nb, released_nb):
    """``tamper_findings`` for every code cell the student wrote or changed,
    as ``[(where, finding)]`` (``where``: the solution's grade id or "cell N")."""
    handed_out = {_source(c).strip() for c in released_nb["cells"]}
    out = []
    for index, cell in enumerate(submitted_nb["cells"]):
        if cell.get("cell_type") != "code" or _source(cell).strip() in handed_out:
            continue
        where = _meta(cell).get("grade_id") or f"cell {index}"
        out += [(where, finding) for finding in tamper_findings(_source(cell))]
    return out


def _error_outputs(nb):
    for index, cell in enumerate(nb["cells"]):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                yield index, cell, output


def timed_out_cells(autograded_nb):
    """Cells stopped at the time limit: ``[grade id or "cell N"]``."""
    return [_meta(cell).get("grade_id") or f"cell {index}"
            for index, cell, output in _error_outputs(autograded_nb)
            if output.get("ename") in ("CellTimeoutError", "TimeoutError")
            or "timeout" in output.get("evalue", "").lower() and output.get("ename") == "KeyboardInterrupt"]


_FAILED = re.compile(r"There was an error processing assignment '([^']+)' for student '([^']+)'")


def nbgrader(*args, course_root=COURSE, env=None, check=True):
    """Run an nbgrader command in the course root; return the finished process."""
    bin_dir = Path(sys.executable).parent
    # nbgrader runs `alembic` from PATH: put this environment's scripts first.
    env = {**os.environ, **(env or {}),
           "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    exe = bin_dir / "nbgrader"
    cmd = [str(exe) if exe.exists() else "nbgrader", *args]
    done = subprocess.run(cmd, cwd=course_root, capture_output=True, text=True, env=env)
    if "Exception while loading config file" in done.stdout + done.stderr:
        # nbgrader would go on without the course's settings (time limits, restored cells).
        raise RuntimeError(f"{Path(course_root) / 'nbgrader_config.py'} failed to load:\n{done.stderr}")
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done


def _read(path):
    return json.loads(Path(path).read_text())


def _students(course_root, name):
    folder = Path(course_root) / "submitted"
    return sorted(p.parent.name for p in folder.glob(f"*/{name}") if p.is_dir())


def _scores(course_root, name):
    """{student: (score, max_score)} from the gradebook, for graded submissions."""
    from nbgrader.api import Gradebook, MissingEntry

    out = {}
    with Gradebook(f"sqlite:///{Path(course_root) / 'gradebook.db'}") as gb:
        for student in _students(course_root, name):
            try:
                sub = gb.find_submission(name, student)
            except MissingEntry:
                continue
            out[student] = (sub.score, sub.max_score)
    return out


def grade(names, course_root=COURSE, timeout=None, log=print):
    """Autograde each assignment in ``names`` for every collected student.

    Returns the report rows (dicts) also written to ``<course>/grading-report.csv``.
    A student whose kernel died (or could not be interrupted) is reported and
    the others are graded; the call never stops at one student.
    """
    course_root = Path(course_root)
    env = {"CAPSLIB_PROFILE": os.environ.get("CAPSLIB_PROFILE", "quick")}
    if timeout is not None:
        env["CAPSLIB_GRADE_TIMEOUT"] = str(int(timeout))
    rows = []
    for name in names:
        students = _students(course_root, name)
        if not students:
            log(f"{name}: no submissions collected (run `capsnet-classroom collect` first)")
            continue
        start = time.perf_counter()
        done = nbgrader("autograde", name, "--force", course_root=course_root, env=env, check=False)
        seconds = time.perf_counter() - start
        failed = {student for assignment, student in _FAILED.findall(done.stdout + done.stderr)
                  if assignment == name}
        unexpected = done.returncode != 0 and not failed
        if unexpected:
            raise RuntimeError(f"nbgrader autograde {name} failed:\n{done.stdout}{done.stderr}")
        scores = _scores(course_root, name)
        seconds_by_student = _seconds_per_student(course_root, name, students, seconds)
        released = _read(course_root / "release" / name / f"{name}.ipynb")
        for student in students:
            submitted_path = course_root / "submitted" / student / name / f"{name}.ipynb"
            graded_path = course_root / "autograded" / student / name / f"{name}.ipynb"
            submitted = _read(submitted_path)
            changes = locked_cell_changes(submitted, released)
            tampering = submission_tampering(submitted, released)
            died = student in failed or not graded_path.exists()
            timeouts = [] if died else timed_out_cells(_read(graded_path))
            score, max_score = scores.get(student, (None, None))
            notes = []
            if died:
                notes.append("NOT GRADED: the kernel died or could not be stopped "
                             "(see the autograde log); the notebook needs a look")
            notes += [f"stopped after the time limit in {where}" for where in timeouts]
            notes += [f"locked cell {gid} {what} (restored before grading)" for gid, what in changes]
            notes += [f"possible tampering in {where}: {what}" for where, what in tampering]
            rows.append({
                "student_id": student, "assignment": name,
                "status": "not graded" if died else "graded",
                "score": "" if died or score is None else f"{score:g}",
                "max_score": "" if max_score is None else f"{max_score:g}",
                "seconds": f"{seconds_by_student.get(student, 0):.0f}",
                "timeouts": len(timeouts), "changed_locked_cells": len(changes),
                "tampering": len(tampering), "notes": "; ".join(notes),
            })
        log(f"{name}: graded {len(students) - len(failed)} of {len(students)} students "
            f"in {seconds:.0f} s" + (f"; NOT graded: {', '.join(sorted(failed))}" if failed else ""))
    _write_report(course_root, rows)
    return rows


def _seconds_per_student(course_root, name, students, seconds):
    """Each student's share of one ``autograde`` run: nbgrader grades them one
    after the other, so the gaps between the graded files' times (a student
    whose kernel died: the gap before the next file) measure each."""
    began = time.time() - seconds
    done = []
    for student in students:
        path = Path(course_root) / "autograded" / student / name / f"{name}.ipynb"
        done.append((path.stat().st_mtime if path.exists() else None, student))
    finished = sorted(t for t, _ in done if t is not None)
    out, previous = {}, began
    for student in students:  # nbgrader's order: sorted by student id
        t = next((t for t, s in done if s == student), None)
        if t is None:  # not graded: until the next graded file (or the end)
            t = next((f for f in finished if f > previous), began + seconds)
        out[student] = max(0.0, t - previous)
        previous = t
    return out


def _write_report(course_root, rows):
    path = Path(course_root) / REPORT
    old = []
    if path.exists():
        names = {row["assignment"] for row in rows}
        with open(path, newline="") as f:
            old = [row for row in csv.DictReader(f) if row["assignment"] not in names]
    fields = ["student_id", "assignment", "status", "score", "max_score", "seconds", "timeouts",
              "changed_locked_cells", "tampering", "notes"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in sorted(old + rows, key=lambda r: (r["assignment"], r["student_id"])):
            writer.writerow(row)
    return path


def print_report(rows, out=print):
    """The report as a table a teacher reads at a glance."""
    out(f"{'student':16} {'notebook':24} {'score':>10} {'seconds':>7}  notes")
    for row in rows:
        score = f"{row['score']}/{row['max_score']}" if row["score"] != "" else row["status"]
        out(f"{row['student_id']:16} {row['assignment']:24} {score:>10} {row['seconds']:>7}  "
            f"{row['notes'] or '-'}")


def feedback(names, course_root=COURSE):
    """``nbgrader generate_feedback`` per assignment; raise if a page holds a hidden test."""
    course_root = Path(course_root)
    pages = []
    for name in names:
        nbgrader("generate_feedback", name, "--force", course_root=course_root)
        pages += sorted((course_root / "feedback").glob(f"*/{name}/*.html"))
    leaks = [page for page in pages if "HIDDEN TESTS" in page.read_text(errors="replace")]
    if leaks:
        raise RuntimeError(f"feedback pages hold hidden tests: {leaks}")
    return pages
