"""``grades.csv``: one row per roster student and notebook, never a silent 0.

``export`` reads the grading report (``grading.REPORT``), the roster
(``<course>/roster.csv``, column ``id``, as Excel saves it in any locale), what
was collected (``<course>/submitted/``) and the collection table
(``<course>/collected.csv``): ``graded`` with the score; ``not graded`` (look at
it: the kernel died, the file sent was unreadable, or it was collected again
after grading, so the report's score is for an earlier file); or ``missing``
(nothing submitted). ``grades.csv`` is written atomically: a full disk leaves
the previous one whole.
"""
import csv
import hashlib
import json
import sys
from pathlib import Path

from capslib.classroom.collect import (COLLECTED, RosterError, csv_text, read_roster, read_table,
                                       write_atomic)
from capslib.classroom.paths import COURSE

REPORT = "grading-report.csv"
GRADES = "grades.csv"
ROSTER = "roster.csv"
FIELDS = ["student_id", "assignment", "status", "score", "max_score", "notes", "submitted_at",
          "late"]


def _meta(cell):
    return cell.get("metadata", {}).get("nbgrader", {})


def _students(course_root, name):
    folder = Path(course_root) / "submitted"
    return sorted(p.parent.name for p in folder.glob(f"*/{name}") if p.is_dir())


def submitted_path(course_root, student, name):
    """Where nbgrader reads a student's submission: ``submitted/<student>/<name>/<name>.ipynb``."""
    return Path(course_root) / "submitted" / student / name / f"{name}.ipynb"


def submission_sha256(course_root, student, name):
    """SHA-256 (64 hex digits) of ``submitted/<student>/<name>/<name>.ipynb``, or None when
    there is none. ``grading`` stores it in the report (column ``submitted_sha256``) so that
    ``export`` can tell the graded file from one collected after grading. OSError other
    than a missing file is raised."""
    try:
        with open(submitted_path(course_root, student, name), "rb") as f:
            digest = hashlib.sha256()
            while chunk := f.read(1 << 20):
                digest.update(chunk)
            return digest.hexdigest()
    except FileNotFoundError:
        return None


def max_points(name, course_root=COURSE):
    """Points of an assignment, from its released notebook's graded cells."""
    path = Path(course_root) / "release" / name / f"{name}.ipynb"
    if not path.exists():
        return ""
    return f"{sum(_meta(c).get('points', 0) for c in json.loads(path.read_text())['cells'] if _meta(c).get('grade')):g}"


def roster_ids(course_root=COURSE):
    """Student ids of ``<course>/roster.csv`` (column ``id``, any case; a BOM, ``;`` and
    Windows-1252 are fine), or None without a roster. Raises ``RosterError`` (one line,
    exit status 2) for a roster that cannot be read."""
    path = Path(course_root) / ROSTER
    if not path.exists():
        return None
    return [row["id"] for row in read_roster(path)[1]]


def stale(course_root, student, name, report_row):
    """Why the report's score is not for the notebook now in submitted/ ('' when it is, or
    when that cannot be told). The report's ``submitted_sha256`` decides; a report without it
    (unknown) falls back to times: a submission written after its autograded copy."""
    graded = (report_row.get("submitted_sha256") or "").strip().lower()
    if graded:
        current = submission_sha256(course_root, student, name)
        return "" if current == graded else "a different file was collected after grading"
    autograded = Path(course_root) / "autograded" / student / name / f"{name}.ipynb"
    try:
        if submitted_path(course_root, student, name).stat().st_mtime > autograded.stat().st_mtime:
            return "collected again after it was graded"
    except OSError:
        pass
    return ""


def export(names, course_root=COURSE, out=None):
    """``grades.csv``: one row per student (roster, else everyone who submitted
    anything) and notebook: ``graded`` with the score, ``not graded`` (kernel
    died, unreadable file, or collected again after grading: look at it), or
    ``missing`` (nothing submitted; never a silent 0). Returns (path, rows).

    Raises ``RosterError`` (one line on stderr, exit status 2) for an unreadable roster;
    OSError when ``grades.csv`` cannot be written (the old one is left whole)."""
    course_root = Path(course_root)
    out = Path(out) if out else course_root / GRADES
    report = {}
    if (course_root / REPORT).exists():
        with open(course_root / REPORT, newline="", encoding="utf-8") as f:
            report = {(r["student_id"], r["assignment"]): r for r in csv.DictReader(f)}
    table = read_table(course_root / COLLECTED)
    collected = {(r["student_id"], r["assignment"]): r for r in table if r["status"] == "collected"}
    try:
        roster = roster_ids(course_root)
    except RosterError as e:
        print(f"export: {e}", file=sys.stderr)
        raise
    submitted = {(s, n) for n in names for s in _students(course_root, n)}
    students = roster or sorted({s for s, _ in submitted})
    extra = sorted({s for s, _ in submitted} - set(students))
    rows = []
    for student in students + extra:
        for name in names:
            row = report.get((student, name))
            came = collected.get((student, name), {})
            score = max_score = ""
            if (student, name) not in submitted:
                sent = [r for r in table if r["student_id"] == student and r["status"] == "not matched"
                        and r["assignment"] in (name, "")]
                if sent:
                    status, notes = "not graded", (f"sent {sent[0]['file']}, not collected: "
                                                   f"{sent[0]['notes']}")
                else:
                    status, max_score, notes = "missing", max_points(name, course_root), "no submission"
            elif row is None:
                status, notes = "not graded", "collected, not yet graded"
            else:
                why = stale(course_root, student, name, row) if row["status"] == "graded" else ""
                if why:
                    status, notes = "not graded", (
                        f"{why}: grade it again (the report's {row['score']}/{row['max_score']} "
                        "was for the earlier file)")
                else:
                    status, score, max_score, notes = (row["status"], row["score"], row["max_score"],
                                                       row["notes"])
            if student in extra:
                notes = "; ".join(filter(None, [notes, "not in the roster"]))
            rows.append({"student_id": student, "assignment": name, "status": status,
                         "score": score, "max_score": max_score, "notes": notes,
                         "submitted_at": came.get("submitted_at", ""), "late": came.get("late", "")})
    write_atomic(out, csv_text(rows, FIELDS))
    return out, rows
