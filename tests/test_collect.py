"""Collection that never loses a student (capslib/classroom/collect.py): a messy made-up class, as
an LMS and browsers hand it over, mapped to (student, notebook) and copied where nbgrader
looks; every file accounted for; missing students listed. No grading here (fast)."""
import csv
import json
import os
import time
import zipfile
from pathlib import Path

import pytest

# The same under every Keras backend: not run again in the JAX pass (Makefile).
pytestmark = pytest.mark.backend_free

ROOT = Path(__file__).resolve().parents[1]


from capslib.classroom import cli as classroom  # noqa: E402
from capslib.classroom import collect  # noqa: E402
NOTEBOOKS, GRADE_IDS = collect.course_notebooks()
NB2 = (ROOT / "student" / "02_primary_capsules.ipynb").read_text()
NB3 = (ROOT / "student" / "03_routing.ipynb").read_text()

ROSTER = """id,name,email,canvas_id,moodle_id
alice,Alice Liddell,alice@uni.edu,,
bob,Bob Marley,,,
carol,Carol Danvers,,,
dave,Dave Grohl,,,
esmith,Eve Smith,,12345,
fjones,Frank Jones,,23456,
ghopper,Grace Hopper,,,555001
heidi,Heidi Klum,,,
ivan,Ivan Drago,,,
judy,Judy Garland,,,
walter,Walter White,,,
ken,Ken Block,,,
mallory,Mallory Knox,,,
peggy,Peggy Olson,,,
"""

# file -> (student, notebook, status) with the roster, collecting 02_primary_capsules.
EXPECTED = {
    "alice_02_primary_capsules.ipynb": ("alice", "02_primary_capsules", "duplicate"),
    "alice_02_primary_capsules (1).ipynb": ("alice", "02_primary_capsules", "collected"),
    "Bob_02_Primary_Capsules-Copy1.ipynb": ("bob", "02_primary_capsules", "collected"),
    "carol_02_primary_capsules_final.ipynb": ("carol", "02_primary_capsules", "collected"),
    "02_primary_capsules - Dave.ipynb": ("dave", "02_primary_capsules", "collected"),
    "canvas.zip/smitheve_12345_67890_02_primary_capsules.ipynb": ("esmith", "02_primary_capsules", "collected"),
    "canvas.zip/jonesfrank_LATE_23456_78901_02_primary_capsules-1.ipynb": ("fjones", "02_primary_capsules", "collected"),
    "moodle/Grace Hopper_555001_assignsubmission_file_/02_primary_capsules.ipynb": ("ghopper", "02_primary_capsules", "collected"),
    "moodle/Heidi Klum_555002_assignsubmission_file_/My Work.zip/primary capsules.ipynb": ("heidi", "02_primary_capsules", "collected"),
    "ivan/primary_capsules.ipynb": ("ivan", "02_primary_capsules", "collected"),
    "judy_03_routing.ipynb": ("judy", "03_routing", "skipped"),
    "walter_04_margin_loss.ipynb": ("walter", "02_primary_capsules", "collected"),
    "ken_02_primary_capsules.pdf": ("ken", "02_primary_capsules", "not matched"),
    "mallory_02_primary_capsules.ipynb": ("mallory", "02_primary_capsules", "not matched"),
    "Untitled.ipynb": ("", "", "not matched"),
    "trent_02_primary_capsules.ipynb": ("", "02_primary_capsules", "not matched"),
    "__MACOSX/._alice_02_primary_capsules.ipynb": ("", "", "ignored"),
}
MISSING = {"judy", "ken", "mallory", "peggy"}


def put(folder, rel, text, age=0):
    path = folder / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    stamp = time.time() - age
    os.utime(path, (stamp, stamp))


@pytest.fixture
def messy(tmp_path):
    """A class as downloaded: loose files, browser copies, a Canvas zip, Moodle folders (one
    holding a student's own zip), junk, a PDF, a broken file, an unknown student."""
    d = tmp_path / "download"
    put(d, "alice_02_primary_capsules.ipynb", NB2, age=3600)
    put(d, "alice_02_primary_capsules (1).ipynb", NB2.replace("# YOUR CODE HERE", "# newer"), age=60)
    put(d, "Bob_02_Primary_Capsules-Copy1.ipynb", NB2)
    put(d, "carol_02_primary_capsules_final.ipynb", NB2)
    put(d, "02_primary_capsules - Dave.ipynb", NB2)
    put(d, "moodle/Grace Hopper_555001_assignsubmission_file_/02_primary_capsules.ipynb", NB2)
    heidi = d / "moodle" / "Heidi Klum_555002_assignsubmission_file_"
    heidi.mkdir(parents=True)
    with zipfile.ZipFile(heidi / "My Work.zip", "w") as zf:
        zf.writestr("primary capsules.ipynb", NB2)
    put(d, "ivan/primary_capsules.ipynb", NB2)
    put(d, "judy_03_routing.ipynb", NB3)
    put(d, "walter_04_margin_loss.ipynb", NB2)  # 02's exercises under 04's name
    put(d, "ken_02_primary_capsules.pdf", "%PDF-1.4")
    put(d, "mallory_02_primary_capsules.ipynb", '{"cells": [')
    put(d, "Untitled.ipynb", json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    put(d, "trent_02_primary_capsules.ipynb", NB2)
    put(d, "__MACOSX/._alice_02_primary_capsules.ipynb", "resource fork")
    with zipfile.ZipFile(d / "canvas.zip", "w") as zf:
        zf.writestr("smitheve_12345_67890_02_primary_capsules.ipynb", NB2)
        zf.writestr("jonesfrank_LATE_23456_78901_02_primary_capsules-1.ipynb", NB2)
    (tmp_path / "roster.csv").write_text(ROSTER)
    return tmp_path


def by_file(rows):
    return {r["file"]: (r["student_id"], r["assignment"], r["status"]) for r in rows if r["file"]}


def test_the_messy_class_is_mapped_with_the_roster(messy, capsys):
    course = messy / "course"
    code = classroom.main(["collect", "02_primary_capsules", "--from", str(messy / "download"),
                           "--roster", str(messy / "roster.csv"), "--course-root", str(course)])
    printed = capsys.readouterr().out
    assert code == 1, "unmatched files must make the command fail"
    with open(course / "collected.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert by_file(rows) == EXPECTED
    assert {r["student_id"] for r in rows if r["status"] == "missing"} == MISSING
    # Every file is in the printed table, with the reason when it was not collected.
    for name in EXPECTED:
        assert name in printed
    notes = {r["file"]: r["notes"] for r in rows}
    assert "not a notebook" in notes["ken_02_primary_capsules.pdf"]
    assert "not a notebook" in notes["mallory_02_primary_capsules.ipynb"]
    assert "not in the roster" in notes["trent_02_primary_capsules.ipynb"]
    assert "kept the newest" in notes["alice_02_primary_capsules.ipynb"]
    assert "late" in notes["canvas.zip/jonesfrank_LATE_23456_78901_02_primary_capsules-1.ipynb"]
    assert "holds 02_primary_capsules" in notes["walter_04_margin_loss.ipynb"]
    # Where nbgrader looks: submitted/<student>/<notebook>/<notebook>.ipynb, the newest copy.
    submitted = course / "submitted"
    collected = sorted(p.relative_to(submitted).as_posix() for p in submitted.rglob("*.ipynb"))
    assert collected == sorted(f"{s}/02_primary_capsules/02_primary_capsules.ipynb"
                               for s, _, status in EXPECTED.values() if status == "collected")
    assert "newer" in (submitted / "alice" / "02_primary_capsules" / "02_primary_capsules.ipynb").read_text()
    # The roster stays beside the gradebook for export.
    assert (course / "roster.csv").read_text() == ROSTER


def test_without_a_roster_ids_come_from_the_names(messy):
    course = messy / "course"
    rows = collect.collect(messy / "download", "ALL", course)
    got = by_file(rows)
    assert got["canvas.zip/smitheve_12345_67890_02_primary_capsules.ipynb"][:2] == ("smitheve", "02_primary_capsules")
    assert got["moodle/Grace Hopper_555001_assignsubmission_file_/02_primary_capsules.ipynb"][0] == "grace-hopper"
    assert got["Bob_02_Primary_Capsules-Copy1.ipynb"][0] == "bob"  # case differences
    assert got["trent_02_primary_capsules.ipynb"] == ("trent", "02_primary_capsules", "collected")
    assert got["judy_03_routing.ipynb"] == ("judy", "03_routing", "collected")
    assert (course / "submitted" / "judy" / "03_routing" / "03_routing.ipynb").read_text() == NB3
    # Everyone seen lacks 03 but judy; judy lacks 02.
    missing = {(r["student_id"], r["assignment"]) for r in rows if r["status"] == "missing"}
    assert ("judy", "02_primary_capsules") in missing and ("bob", "03_routing") in missing
    assert ("judy", "03_routing") not in missing


def test_a_clean_class_exits_0_and_the_table_keeps_other_notebooks(tmp_path, capsys):
    d = tmp_path / "download"
    put(d, "alice_02_primary_capsules.ipynb", NB2)
    put(d, "bob/02_primary_capsules.ipynb", NB2)
    put(d, "week3/alice_03_routing.ipynb", NB3)
    course = tmp_path / "course"
    args = ["--from", str(d), "--course-root", str(course)]
    assert classroom.main(["collect", "02_primary_capsules", *args]) == 0
    assert classroom.main(["collect", "03_routing", *args]) == 0
    assert "missing: no submission" in capsys.readouterr().out  # bob, 03
    with open(course / "collected.csv", newline="") as f:
        rows = {(r["student_id"], r["assignment"], r["status"]) for r in csv.DictReader(f)}
    assert {("alice", "02_primary_capsules", "collected"), ("bob", "02_primary_capsules", "collected"),
            ("alice", "03_routing", "collected"), ("bob", "03_routing", "missing")} <= rows
    assert ("alice", "03_routing", "skipped") not in rows  # the 03 run replaced its own rows only


@pytest.mark.parametrize("text, notebook", [
    ("alice_02_primary_capsules", "02_primary_capsules"),
    ("08_does_routing_help-Copy1", "08_does_routing_help"),
    ("Does Routing Help", "08_does_routing_help"),  # the longest words win over 03's "routing"
    ("routing", "03_routing"),
    ("MARGIN-LOSS_final", "04_margin_loss"),
    ("notes", None),
    ("routing data", None),  # a tie: no guess
])
def test_notebook_names(text, notebook):
    found = collect.notebook_in(text, NOTEBOOKS)
    assert (found[0] if found else None) == notebook


def test_roster_matches_names_in_any_order_and_lms_numbers(tmp_path):
    path = tmp_path / "roster.csv"
    path.write_text("id,first_name,last_name,email,canvas_id\n"
                    "s001,Alice,Smith,a.smith@uni.edu,98765\ns002,Bob,Smith,,\n")
    roster = collect.Roster(path)
    assert roster.find("smithalice")[0] == "s001"  # Canvas: last name first
    assert roster.find("Alice Smith")[0] == "s001"
    assert roster.find("a.smith")[0] == "s001"
    assert roster.find("whoever", "canvas", "98765")[0] == "s001"
    assert roster.find("S002")[0] == "s002"
    sid, why = roster.find("carol")
    assert sid is None and "not in the roster" in why


def test_a_roster_without_ids_stops_before_anything_is_written(tmp_path):
    put(tmp_path / "download", "alice_02_primary_capsules.ipynb", NB2)
    (tmp_path / "roster.csv").write_text("name,email\nAlice,a@uni.edu\n")
    course = tmp_path / "course"
    with pytest.raises(SystemExit, match="no column 'id'"):
        classroom.main(["collect", "ALL", "--from", str(tmp_path / "download"),
                        "--roster", str(tmp_path / "roster.csv"), "--course-root", str(course)])
    assert not course.exists()
