"""``grades.csv``: one row per roster student and notebook, never a silent 0.

``export`` reads the grading report (``grading.REPORT``), the roster
(``<course>/roster.csv``, column ``id``) and what was collected
(``<course>/submitted/``): ``graded`` with the score, ``not graded`` (look at
it), or ``missing`` (nothing submitted).
"""
import csv
import json
from pathlib import Path

from capslib.classroom.paths import COURSE

REPORT = "grading-report.csv"
GRADES = "grades.csv"
ROSTER = "roster.csv"


def _meta(cell):
    return cell.get("metadata", {}).get("nbgrader", {})


def _students(course_root, name):
    folder = Path(course_root) / "submitted"
    return sorted(p.parent.name for p in folder.glob(f"*/{name}") if p.is_dir())


def max_points(name, course_root=COURSE):
    """Points of an assignment, from its released notebook's graded cells."""
    path = Path(course_root) / "release" / name / f"{name}.ipynb"
    if not path.exists():
        return ""
    return f"{sum(_meta(c).get('points', 0) for c in json.loads(path.read_text())['cells'] if _meta(c).get('grade')):g}"


def roster_ids(course_root=COURSE):
    """Student ids of ``<course>/roster.csv`` (column ``id``), or None without a roster."""
    path = Path(course_root) / ROSTER
    if not path.exists():
        return None
    with open(path, newline="") as f:
        return [row["id"].strip() for row in csv.DictReader(f) if row.get("id", "").strip()]


def export(names, course_root=COURSE, out=None):
    """``grades.csv``: one row per student (roster, else everyone who submitted
    anything) and notebook: ``graded`` with the score, ``not graded`` (kernel
    died: look at it), or ``missing`` (nothing submitted; never a silent 0)."""
    course_root = Path(course_root)
    out = Path(out) if out else course_root / GRADES
    report = {}
    if (course_root / REPORT).exists():
        with open(course_root / REPORT, newline="") as f:
            report = {(r["student_id"], r["assignment"]): r for r in csv.DictReader(f)}
    submitted = {(s, n) for n in names for s in _students(course_root, n)}
    students = roster_ids(course_root) or sorted({s for s, _ in submitted})
    extra = sorted({s for s, _ in submitted} - set(students))
    rows = []
    for student in students + extra:
        for name in names:
            row = report.get((student, name))
            if (student, name) not in submitted:
                status, score, max_score, notes = "missing", "", max_points(name, course_root), "no submission"
            elif row is None:
                status, score, max_score, notes = "not graded", "", "", "collected, not yet graded"
            else:
                status, score, max_score, notes = (row["status"], row["score"], row["max_score"],
                                                   row["notes"])
            if student in extra:
                notes = "; ".join(filter(None, [notes, "not in the roster"]))
            rows.append({"student_id": student, "assignment": name, "status": status,
                         "score": score, "max_score": max_score, "notes": notes})
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["student_id"])
        writer.writeheader()
        writer.writerows(rows)
    return out, rows
