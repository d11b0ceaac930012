"""grades.csv (capslib/classroom/export.py): every roster student gets a row whatever Excel
did to the roster, a score is never shown for a file other than the one graded, and the file
is written whole or not at all. No nbgrader run here: the report is written by the test."""
import csv
import errno
import hashlib
import os
from pathlib import Path

import pytest

from capslib.classroom import collect, export

pytestmark = pytest.mark.backend_free

ROOT = Path(__file__).resolve().parents[1]
NB2 = (ROOT / "student" / "02_primary_capsules.ipynb").read_text()
NAME = "02_primary_capsules"
REPORT_FIELDS = ["student_id", "assignment", "status", "score", "max_score", "seconds", "timeouts",
                 "changed_locked_cells", "tampering", "notes"]


def submit(course, student, text=NB2, age=0):
    path = course / "submitted" / student / NAME / f"{NAME}.ipynb"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if age:
        os.utime(path, (path.stat().st_mtime - age,) * 2)
    return path


def report(course, rows, sha=True):
    """A grading report as grading.py writes it (with or without submitted_sha256)."""
    fields = REPORT_FIELDS + (["submitted_sha256"] if sha else [])
    with open(course / export.REPORT, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval="", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def graded(student, score="3", sha=""):
    return {"student_id": student, "assignment": NAME, "status": "graded", "score": score,
            "max_score": "5", "submitted_sha256": sha}


def grades(course):
    _, rows = export.export([NAME], course_root=course)
    return {r["student_id"]: r for r in rows}


@pytest.mark.parametrize("roster", [
    "\ufeffid,name\r\nalice,Alice\r\nbob,Bob\r\ncarol,Carol\r\n".encode("utf-8"),  # Excel's CSV UTF-8
    "ID;Name\r\nalice;Alice\r\nbob;Bob\r\ncarol;Carol\r\n".encode("utf-8-sig"),
    "Id;Name\r\nalice;Älice\r\nbob;Bøb\r\ncarol;Carol\r\n".encode("cp1252"),
])
def test_every_roster_student_gets_a_row_whatever_excel_did(tmp_path, roster):
    course = tmp_path / "course"
    course.mkdir()
    (course / "roster.csv").write_bytes(roster)
    submit(course, "alice")
    report(course, [graded("alice", sha=export.submission_sha256(course, "alice", NAME))])
    rows = grades(course)
    assert list(rows) == ["alice", "bob", "carol"]
    assert rows["alice"]["status"] == "graded" and rows["alice"]["score"] == "3"
    assert rows["bob"]["status"] == rows["carol"]["status"] == "missing"
    with open(course / export.GRADES, newline="", encoding="utf-8") as f:
        assert [r["student_id"] for r in csv.DictReader(f)] == ["alice", "bob", "carol"]


def test_a_resubmission_collected_after_grading_shows_no_stale_score(tmp_path):
    course = tmp_path / "course"
    course.mkdir()
    submit(course, "alice")
    submit(course, "bob")
    report(course, [graded("alice", "3", export.submission_sha256(course, "alice", NAME)),
                    graded("bob", "4", export.submission_sha256(course, "bob", NAME))])
    assert grades(course)["alice"]["score"] == "3"
    submit(course, "alice", NB2.replace("# YOUR CODE HERE", "# resubmitted"))  # collected, not graded
    rows = grades(course)
    assert rows["alice"]["status"] == "not graded" and rows["alice"]["score"] == ""
    assert "after grading" in rows["alice"]["notes"] and "3/5" in rows["alice"]["notes"]
    assert rows["bob"]["status"] == "graded" and rows["bob"]["score"] == "4"


def test_a_report_without_checksums_falls_back_to_times(tmp_path):
    course = tmp_path / "course"
    course.mkdir()
    report(course, [graded("alice"), graded("bob"), graded("carol")], sha=False)
    for student, submitted_age, graded_age in (("alice", 600, 300), ("bob", 300, 600)):
        submit(course, student, age=submitted_age)
        autograded = course / "autograded" / student / NAME / f"{NAME}.ipynb"
        autograded.parent.mkdir(parents=True)
        autograded.write_text(NB2)
        os.utime(autograded, (autograded.stat().st_mtime - graded_age,) * 2)
    submit(course, "carol")  # no autograded copy: unknown, the score stands
    rows = grades(course)
    assert rows["alice"]["status"] == "graded"  # graded after it was collected
    assert rows["bob"]["status"] == "not graded" and "collected again after it was graded" in rows["bob"]["notes"]
    assert rows["carol"]["status"] == "graded"


def test_an_unreadable_submission_is_not_called_missing(tmp_path):
    download = tmp_path / "download"
    download.mkdir()
    (download / "alice_02_primary_capsules.ipynb").write_text(NB2)
    (download / "bob_02_primary_capsules.ipynb").write_text('{"cells": [')
    course = tmp_path / "course"
    (tmp_path / "roster.csv").write_text("id,name\nalice,Alice\nbob,Bob\ncarol,Carol\n")
    collect.collect(download, NAME, course, tmp_path / "roster.csv")
    (course / "roster.csv").write_text("id,name\nalice,Alice\nbob,Bob\ncarol,Carol\n")
    rows = grades(course)
    assert rows["bob"]["status"] == "not graded"
    assert "bob_02_primary_capsules.ipynb" in rows["bob"]["notes"] and "unreadable" in rows["bob"]["notes"]
    assert rows["carol"]["status"] == "missing" and rows["carol"]["notes"] == "no submission"
    assert rows["alice"]["status"] == "not graded" and rows["alice"]["submitted_at"]


def test_submission_sha256(tmp_path):
    path = submit(tmp_path, "alice")
    assert export.submission_sha256(tmp_path, "alice", NAME) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert export.submission_sha256(tmp_path, "nobody", NAME) is None


def test_an_unreadable_roster_stops_export_with_one_line(tmp_path, capsys):
    course = tmp_path / "course"
    course.mkdir()
    (course / "roster.csv").write_text("name,email\nAlice,a@uni.edu\n")
    with pytest.raises(SystemExit) as stopped:
        export.export([NAME], course_root=course)
    assert stopped.value.code == 2
    said = capsys.readouterr().err.strip().splitlines()
    assert len(said) == 1 and "no column 'id'" in said[0]
    assert not (course / export.GRADES).exists()


def test_grades_csv_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    course = tmp_path / "course"
    course.mkdir()
    (course / "roster.csv").write_text("id\n" + "".join(f"s{i:03d}\n" for i in range(400)))
    export.export([NAME], course_root=course)
    before = (course / export.GRADES).read_bytes()
    submit(course, "s001")
    real = os.write

    def disk_full(fd, data):  # half of grades.csv reaches the disk, then the disk is full
        if "grades.csv" in os.readlink(f"/proc/self/fd/{fd}"):
            real(fd, bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data)
    monkeypatch.setattr(os, "write", disk_full)
    with pytest.raises(OSError, match="No space left"):
        export.export([NAME], course_root=course)
    monkeypatch.undo()
    assert (course / export.GRADES).read_bytes() == before
    assert sorted(p.name for p in course.iterdir()) == ["grades.csv", "roster.csv", "submitted"]
