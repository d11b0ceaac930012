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


# -- what LMSs export ------------------------------------------------------------------------

def rows_of(course):
    with open(course / "collected.csv", newline="") as f:
        return list(csv.DictReader(f))


def local(*fields):
    """Epoch seconds of a local time (LMSs and zips write local times)."""
    return time.mktime(tuple(fields) + (0,) * (6 - len(fields)) + (0, 0, -1))


def stamp_of(course, student, nb):
    """nbgrader's own reading of submitted/<student>/<nb>/timestamp.txt, as epoch seconds."""
    from datetime import timezone

    from nbgrader.utils import parse_utc
    text = (course / "submitted" / student / nb / "timestamp.txt").read_text()
    return parse_utc(text).replace(tzinfo=timezone.utc).timestamp()


def zip_entry(zf, name, text, when):
    info = zipfile.ZipInfo(name, date_time=time.localtime(when)[:6])
    info.compress_type = zipfile.ZIP_DEFLATED
    zf.writestr(info, text)


def test_blackboard_attempts_and_receipts(tmp_path, capsys):
    d = tmp_path / "download"
    # The attempt's date, not the file's time, decides which is newer.
    put(d, "HW2_alice_attempt_2024-03-05-11-32-10_02_primary_capsules.ipynb", NB2.replace("# YOUR CODE HERE", "# second"), age=9000)
    put(d, "HW2_alice_attempt_2024-03-05-11-32-10.txt", "Name: Alice\nSubmission field: ...")
    put(d, "HW2_alice_attempt_2024-03-01-09-00-00_02_primary_capsules.ipynb", NB2)
    put(d, "HW2_alice_attempt_2024-03-01-09-00-00.txt", "receipt")
    put(d, "02 Primary capsules_bob_attempt_2024-03-04-23-59-00_notebook.ipynb", NB2)  # the assignment names it
    course = tmp_path / "course"
    assert classroom.main(["collect", "02_primary_capsules", "--from", str(d), "--course-root", str(course)]) == 1
    got = {r["file"]: r for r in rows_of(course)}
    newer = got["HW2_alice_attempt_2024-03-05-11-32-10_02_primary_capsules.ipynb"]
    assert (newer["student_id"], newer["status"], newer["time_from"]) == ("alice", "collected", "blackboard file name")
    assert got["HW2_alice_attempt_2024-03-01-09-00-00_02_primary_capsules.ipynb"]["status"] == "duplicate"
    assert {got[f]["status"] for f in got if f.endswith(".txt")} == {"ignored"}
    assert got["02 Primary capsules_bob_attempt_2024-03-04-23-59-00_notebook.ipynb"]["student_id"] == "bob"
    assert "# second" in (course / "submitted/alice/02_primary_capsules/02_primary_capsules.ipynb").read_text()
    assert stamp_of(course, "alice", "02_primary_capsules") == local(2024, 3, 5, 11, 32, 10)
    assert collect.parse_time(newer["submitted_at"]) == local(2024, 3, 5, 11, 32, 10)


def test_brightspace_zip_with_its_index(tmp_path, capsys):
    d = tmp_path / "download"
    d.mkdir()
    with zipfile.ZipFile(d / "Assignment 2 Download Mar 7, 2024 1012 AM.zip", "w") as zf:
        zf.writestr("index.html", "<html>submissions</html>")
        zf.writestr("123-456 - Smith, Alice - Mar 5, 2024 1132 AM - 02_primary_capsules.ipynb", NB2)
        zf.writestr("123-457 - Jones, Bob - Mar 6, 2024 1205 PM - Capsules-final.ipynb", NB2)
    course = tmp_path / "course"
    (tmp_path / "roster.csv").write_text("id,name\nasmith,Alice Smith\nbjones,Bob Jones\n")
    assert classroom.main(["collect", "02_primary_capsules", "--from", str(d), "--course-root", str(course),
                           "--roster", str(tmp_path / "roster.csv")]) == 0, capsys.readouterr().out
    rows = rows_of(course)
    assert {(r["student_id"], r["status"]) for r in rows} == {("", "ignored"), ("asmith", "collected"),
                                                             ("bjones", "collected")}
    assert stamp_of(course, "asmith", "02_primary_capsules") == local(2024, 3, 5, 11, 32)
    assert stamp_of(course, "bjones", "02_primary_capsules") == local(2024, 3, 6, 12, 5)
    assert collect.brightspace_time("Mar 6, 2024 1205 AM") == local(2024, 3, 6, 0, 5)


def test_teams_and_google_classroom_folders(tmp_path):
    d = tmp_path / "download"
    put(d, "Submitted files/Alice Liddell/Version 1/02_primary_capsules.ipynb", NB2, age=7200)
    put(d, "Submitted files/Alice Liddell/Version 2/02_primary_capsules.ipynb", NB2.replace("# YOUR CODE HERE", "# v2"), age=60)
    put(d, "Bob Marley/Working files/primary_capsules.ipynb", NB2)
    put(d, "Carol Danvers/capsnet stuff/02_primary_capsules.ipynb", NB2)  # Google: any subfolder
    (tmp_path / "roster.csv").write_text(ROSTER)
    course = tmp_path / "course"
    rows = collect.collect(d, "02_primary_capsules", course, tmp_path / "roster.csv")
    got = by_file(rows)
    assert got["Submitted files/Alice Liddell/Version 2/02_primary_capsules.ipynb"] == ("alice", "02_primary_capsules", "collected")
    assert got["Submitted files/Alice Liddell/Version 1/02_primary_capsules.ipynb"][2] == "duplicate"
    assert got["Bob Marley/Working files/primary_capsules.ipynb"][:2] == ("bob", "02_primary_capsules")
    assert got["Carol Danvers/capsnet stuff/02_primary_capsules.ipynb"][:2] == ("carol", "02_primary_capsules")
    # Without a roster the version folders are still not students.
    rows = collect.collect(d, "02_primary_capsules", tmp_path / "c2")
    assert {r["student_id"] for r in rows if r["status"] == "collected"} >= {"alice-liddell", "bob-marley"}


def test_canvas_late_mark_and_time_reach_nbgrader(tmp_path):
    d = tmp_path / "download"
    d.mkdir()
    when = local(2024, 3, 9, 23, 58, 30)
    with zipfile.ZipFile(d / "submissions.zip", "w") as zf:
        zip_entry(zf, "jonesfrank_LATE_23456_78901_02_primary_capsules-1.ipynb", NB2, when)
        zip_entry(zf, "smitheve_12345_67890_02_primary_capsules.ipynb", NB2, when - 86400)
    (tmp_path / "roster.csv").write_text(ROSTER)
    course = tmp_path / "course"
    collect.collect(d, "02_primary_capsules", course, tmp_path / "roster.csv")
    rows = {r["student_id"]: r for r in rows_of(course) if r["status"] == "collected"}
    assert rows["fjones"]["late"] == "late (Canvas)" and rows["esmith"]["late"] == ""
    assert rows["fjones"]["time_from"] == "zip entry"
    assert stamp_of(course, "fjones", "02_primary_capsules") == when
    assert collect.parse_time(rows["esmith"]["submitted_at"]) == when - 86400
    # nbgrader's course directory reads it back (what autograde's late penalties use).
    from nbgrader.coursedir import CourseDirectory
    read = CourseDirectory().get_existing_timestamp(str(course / "submitted/fjones/02_primary_capsules"))
    assert read is not None and read.year == 2024


# -- rosters as Excel saves them ---------------------------------------------------------------

@pytest.mark.parametrize("encoding, delimiter, header", [
    ("utf-8-sig", ";", "ID"),      # Excel, German locale, CSV UTF-8
    ("utf-8", ",", "Id"),
    ("cp1252", ";", "id"),         # Excel's plain "CSV" in a Western locale
    ("utf-16", "\t", "ID"),        # Excel's "Unicode text"
])
def test_rosters_saved_by_excel_in_any_locale(tmp_path, encoding, delimiter, header):
    text = (f"{header}{delimiter}Name{delimiter}Email\r\n"
            f"jmueller{delimiter}Jürgen Müller{delimiter}j.mueller@uni.de\r\n"
            f"asmith{delimiter}\"Smith, Alice\"{delimiter}\r\n")
    path = tmp_path / "roster.csv"
    path.write_bytes(text.encode(encoding))
    roster = collect.Roster(path)
    assert roster.ids == ["jmueller", "asmith"]
    assert roster.find("Jürgen Müller")[0] == "jmueller"
    assert roster.find("muellerjurgen")[0] == "jmueller" or roster.find("mullerjurgen")[0] == "jmueller"
    assert roster.find("smithalice")[0] == "asmith"


STUB = f"""
import resource, sys, types
pkg = types.ModuleType("capslib")  # the classroom's modules without Keras, TensorFlow and JAX
pkg.__path__ = [{str(ROOT / 'capslib')!r}]
sys.modules["capslib"] = pkg
"""


def run_classroom(args, cwd):
    import subprocess
    import sys
    code = STUB + f"from capslib.classroom import cli\nsys.exit(cli.main({args!r}))\n"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


@pytest.mark.parametrize("content, says", [
    (b"name,email\nAlice,a@uni.edu\n", "no column 'id'"),
    (b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + bytes(range(256)) * 4, "not text"),
    (b"id,name\nalice,Alice\nalice,Alice again\n", "appears twice"),
    (b"", "empty"),
])
def test_an_unreadable_roster_is_one_line_and_exit_2(tmp_path, content, says):
    put(tmp_path / "download", "alice_02_primary_capsules.ipynb", NB2)
    (tmp_path / "roster.csv").write_bytes(content)
    course = tmp_path / "course"
    done = run_classroom(["collect", "ALL", "--from", str(tmp_path / "download"), "--roster",
                          str(tmp_path / "roster.csv"), "--course-root", str(course)], tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and "roster.csv" in lines[0], done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert not course.exists()


# -- never decided silently ---------------------------------------------------------------------

def test_equal_times_are_said_and_decided_the_same_way_each_time(tmp_path):
    d = tmp_path / "download"
    put(d, "alice_02_primary_capsules.ipynb", NB2.replace("# YOUR CODE HERE", "# one"))
    put(d, "alice_02_primary_capsules_final.ipynb", NB2.replace("# YOUR CODE HERE", "# two"))
    same = time.time() - 100
    for name in ("alice_02_primary_capsules.ipynb", "alice_02_primary_capsules_final.ipynb"):
        os.utime(d / name, (same, same))
    kept = set()
    for run in ("a", "b"):
        rows = {r["file"]: r for r in collect.collect(d, "02_primary_capsules", tmp_path / run)}
        winner = rows["alice_02_primary_capsules_final.ipynb"]
        assert winner["status"] == "collected"
        assert ("2 files with the same time: kept alice_02_primary_capsules_final.ipynb, also "
                "alice_02_primary_capsules.ipynb; check") in winner["notes"]
        loser = rows["alice_02_primary_capsules.ipynb"]
        assert loser["status"] == "duplicate" and "the same time" in loser["notes"]
        saved = {r["file"]: r["notes"] for r in rows_of(tmp_path / run)}
        assert "same time" in saved["alice_02_primary_capsules_final.ipynb"]
        kept.add((tmp_path / run / "submitted/alice/02_primary_capsules/02_primary_capsules.ipynb").read_text())
    assert len(kept) == 1 and "# two" in kept.pop()


def test_broken_files_are_submitted_unreadable_and_the_class_still_collected(tmp_path):
    d = tmp_path / "download"
    put(d, "alice_02_primary_capsules.ipynb", NB2)
    (d / "bob_02_primary_capsules.zip").write_bytes(b"PK\x03\x04 this is not a zip")
    put(d, "carol_02_primary_capsules.ipynb", NB2[: len(NB2) // 2])  # cut short
    nb = json.loads(NB2)
    nb["cells"][3]["source"] = 5
    put(d, "dave_02_primary_capsules.ipynb", json.dumps(nb))
    inner = io_zip({"heidi_02_primary_capsules.ipynb": NB2})
    with zipfile.ZipFile(d / "heidi.zip", "w") as zf:
        zf.writestr("inner.zip", inner[:40])  # a nested zip cut short
    put(d, "ivan/02_primary_capsules.ipynb", "\x00\x01 binary")
    (tmp_path / "roster.csv").write_text(ROSTER)
    course = tmp_path / "course"
    rows = collect.collect(d, "02_primary_capsules", course, tmp_path / "roster.csv")
    files = {r["file"]: r for r in rows if r["file"]}
    assert files["alice_02_primary_capsules.ipynb"]["status"] == "collected"
    for name, why in [("bob_02_primary_capsules.zip", "broken zip"),
                      ("carol_02_primary_capsules.ipynb", "not JSON"),
                      ("dave_02_primary_capsules.ipynb", "cell 3's source holds int"),
                      ("heidi.zip/inner.zip", "broken zip"),
                      ("ivan/02_primary_capsules.ipynb", "not a notebook")]:
        assert files[name]["status"] == "not matched", name
        assert files[name]["notes"].startswith("submitted, unreadable: "), files[name]
        assert why in files[name]["notes"], files[name]
    missing = {r["student_id"]: r["notes"] for r in rows if r["status"] == "missing"}
    for sid in ("bob", "carol", "dave", "ivan"):
        assert "no submission" not in missing[sid] and "came but is not collected" in missing[sid]
    assert missing["peggy"] == "no submission"


def io_zip(entries):
    import io
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in entries.items():
            zf.writestr(name, text)
    return buffer.getvalue()


def test_a_file_that_breaks_the_reader_never_stops_the_class(tmp_path, monkeypatch):
    d = tmp_path / "download"
    put(d, "alice_02_primary_capsules.ipynb", NB2)
    put(d, "bob_02_primary_capsules.ipynb", NB2)
    real = collect.identify

    def flaky(found, *args):
        if found.name.startswith("alice"):
            raise RecursionError("maximum recursion depth exceeded")
        return real(found, *args)
    monkeypatch.setattr(collect, "identify", flaky)
    rows = by_file(collect.collect(d, "02_primary_capsules", tmp_path / "course"))
    assert rows["alice_02_primary_capsules.ipynb"][2] == "not matched"
    assert rows["bob_02_primary_capsules.ipynb"] == ("bob", "02_primary_capsules", "collected")


# -- never lose, never leak --------------------------------------------------------------------

def test_links_are_never_followed_out_of_the_download(tmp_path, capsys):
    d = tmp_path / "download"
    put(d, "bob_02_primary_capsules.ipynb", NB2)
    d.joinpath("alice_02_primary_capsules.ipynb").symlink_to(ROOT / "notebooks" / "02_primary_capsules.ipynb")
    d.joinpath("carol").symlink_to(ROOT / "notebooks", target_is_directory=True)
    course = tmp_path / "course"
    classroom.main(["collect", "02_primary_capsules", "--from", str(d), "--course-root", str(course)])
    printed = capsys.readouterr().out
    got = {r["file"]: r for r in rows_of(course)}
    assert got["alice_02_primary_capsules.ipynb"]["status"] == "skipped"
    assert got["alice_02_primary_capsules.ipynb"]["notes"].startswith("a link")
    assert got["carol"]["status"] == "skipped" and got["carol"]["notes"].startswith("a link")
    assert "skipped: a link" in printed
    assert sorted(p.relative_to(course / "submitted").as_posix() for p in (course / "submitted").rglob("*.ipynb")) \
        == ["bob/02_primary_capsules/02_primary_capsules.ipynb"]


def raw_zip(path, entries):
    """A zip written by hand, so that an entry can declare any size: entries are (name,
    deflated bytes, declared size, CRC-32)."""
    import struct
    local, central = bytearray(), bytearray()
    for name, data, size, crc in entries:
        name = name.encode()
        header = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 8, 0, 0x21, crc, len(data), size, len(name), 0)
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 8, 0, 0x21, crc, len(data), size,
                               len(name), 0, 0, 0, 0, 0, len(local)) + name
        local += header + name + data
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(central), len(local), 0)
    Path(path).write_bytes(bytes(local + central + end))


def deflated_zeros(mb):
    """Raw deflate of ``mb`` MiB of zeros, made from one compressed MiB repeated (fast)."""
    import zlib
    one = zlib.compressobj(9, zlib.DEFLATED, -15)
    segment = one.compress(bytes(1 << 20)) + one.flush(zlib.Z_FULL_FLUSH)
    end = zlib.compressobj(9, zlib.DEFLATED, -15).flush()
    return segment * mb + end


def deflated(text):
    import zlib
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(text.encode()) + c.flush()


MEASURE = STUB + """
import json
from pathlib import Path
from capslib.classroom import collect
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
rows = collect.collect(sys.argv[1], "02_primary_capsules", sys.argv[2], student=sys.argv[3])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM")][0].split()[1]
print(json.dumps({"before_mb": before / 1024, "peak_mb": peak / 1024, "hwm_mb": int(hwm) / 1024,
                  "rows": rows}))
"""


def test_a_zip_bomb_is_reported_within_bounded_memory(tmp_path):
    import subprocess
    import sys
    d = tmp_path / "download"
    d.mkdir()
    bomb = deflated_zeros(1000)  # 1 MB that expands to 1 GiB
    import zlib
    zeros_crc = 0
    for _ in range(1000):
        zeros_crc = zlib.crc32(bytes(1 << 20), zeros_crc)
    raw_zip(d / "class.zip", [("alice_02_primary_capsules.ipynb", bomb, 1000 << 20, zeros_crc),
                              ("bob_02_primary_capsules.ipynb", deflated(NB2), len(NB2.encode()),
                               zlib.crc32(NB2.encode())),
                              # a lying header: 1 GiB of zeros declared as 1 kB
                              ("dave_02_primary_capsules.ipynb", bomb, 1000, zlib.crc32(bytes(1000)))])
    assert (d / "class.zip").stat().st_size < 2.5 * collect.MB
    put(d, "carol_02_primary_capsules.ipynb", NB2)
    # Through sh, which forks Python anew: a process started straight from this one would
    # report pytest's own peak (Linux keeps ru_maxrss across exec).
    done = subprocess.run(["sh", "-c", '"$0" -c "$1" "$2" "$3" "$4"; exit $?', sys.executable, MEASURE,
                           str(d), str(tmp_path / "course"), str(ROOT / "student")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    print(f"zip bomb: peak RSS {result['peak_mb']:.0f} MB (after imports {result['before_mb']:.0f} MB, "
          f"VmHWM {result['hwm_mb']:.0f} MB)")
    assert result["peak_mb"] < 200 and result["hwm_mb"] < 200
    rows = by_file(result["rows"])
    notes = {r["file"]: r["notes"] for r in result["rows"]}
    assert rows["class.zip/alice_02_primary_capsules.ipynb"][2] == "not matched"
    assert "zip bomb" in notes["class.zip/alice_02_primary_capsules.ipynb"]
    assert notes["class.zip/alice_02_primary_capsules.ipynb"].startswith("submitted, unreadable")
    assert rows["class.zip/dave_02_primary_capsules.ipynb"][2] == "not matched"
    print("lying header:", notes["class.zip/dave_02_primary_capsules.ipynb"])
    assert rows["class.zip/bob_02_primary_capsules.ipynb"][2] == "collected"
    assert rows["carol_02_primary_capsules.ipynb"][2] == "collected"
    assert not list((tmp_path / "course").glob(".collect-*"))  # the unpacked entries are gone


def test_zips_are_read_within_bounds(tmp_path):
    d = tmp_path / "download"
    d.mkdir()
    with zipfile.ZipFile(d / "paths.zip", "w") as zf:
        zf.writestr("../../escaped_02_primary_capsules.ipynb", NB2)
        zf.writestr("/abs_02_primary_capsules.ipynb", NB2)
        zf.writestr("alice_02_primary_capsules.ipynb", NB2)
    with zipfile.ZipFile(d / "many.zip", "w") as zf:
        for name in ("bob", "carol", "dave", "eve", "frank"):
            zf.writestr(f"{name}_02_primary_capsules.ipynb", NB2)
    deep = io_zip({"grace_02_primary_capsules.ipynb": NB2})
    for level in range(3):
        deep = io_zip({f"level{level}.zip": deep})
    (d / "deep.zip").write_bytes(deep)  # 4 zips down
    course = tmp_path / "course"
    limits = collect.Limits(total_mb=0.3, files=4, depth=3)
    rows = {r["file"]: r for r in collect.collect(d, "02_primary_capsules", course, limits=limits)}
    out = [r for f, r in rows.items() if "escaped" in f or "abs_" in f]
    assert len(out) == 2 and all(r["status"] == "skipped" and "leading out of the zip" in r["notes"] for r in out)
    assert not list(tmp_path.rglob("escaped*")) and not Path("/abs_02_primary_capsules.ipynb").exists()
    assert rows["paths.zip/alice_02_primary_capsules.ipynb"]["status"] == "collected"
    assert "more than 4 files" in rows["many.zip/frank_02_primary_capsules.ipynb"]["notes"]
    assert rows["many.zip/dave_02_primary_capsules.ipynb"]["status"] == "collected"
    nested = [r for f, r in rows.items() if f.startswith("deep.zip")]
    assert len(nested) == 1 and "nested more than 3 deep" in nested[0]["notes"]
    # The total: 0.3 MB of notebooks per archive given.
    with zipfile.ZipFile(d / "big.zip", "w") as zf:
        for name in ("heidi", "ivan", "judy", "ken", "mallory", "peggy", "trent", "walter", "zoe", "yan"):
            zf.writestr(f"{name}_02_primary_capsules.ipynb", NB2)
    rows = collect.collect(d / "big.zip", "02_primary_capsules", tmp_path / "c2",
                           limits=collect.Limits(total_mb=0.3))
    over = [r for r in rows if "download's zips may hold in all" in r["notes"]]
    assert over and sum(r["status"] == "collected" for r in rows) == int(0.3 * collect.MB // len(NB2.encode()))


def test_an_older_download_never_replaces_a_newer_submission(tmp_path, capsys):
    course = tmp_path / "course"

    def download(folder, when, marker):
        folder.mkdir()
        with zipfile.ZipFile(folder / "class.zip", "w") as zf:
            zip_entry(zf, "alice_02_primary_capsules.ipynb", NB2.replace("# YOUR CODE HERE", marker), when)
            zip_entry(zf, "bob_02_primary_capsules.ipynb", NB2, local(2024, 3, 1))
        put(folder, "carol_02_primary_capsules.ipynb", NB2.replace("# YOUR CODE HERE", marker),
            age=time.time() - when)  # no LMS time: its modification time, kept in collected.csv
        return ["collect", "02_primary_capsules", "--from", str(folder), "--course-root", str(course)]

    submitted = course / "submitted"
    assert classroom.main(download(tmp_path / "new", local(2024, 3, 10), "# new")) == 0
    assert not (submitted / "carol/02_primary_capsules/timestamp.txt").exists()
    capsys.readouterr()
    assert classroom.main(download(tmp_path / "old", local(2024, 3, 2), "# old")) == 1
    printed = capsys.readouterr().out
    for sid in ("alice", "carol"):
        assert "# new" in (submitted / sid / "02_primary_capsules/02_primary_capsules.ipynb").read_text()
    assert stamp_of(course, "alice", "02_primary_capsules") == local(2024, 3, 10)
    assert printed.count("kept the newer one already collected") == 2
    rows = rows_of(course)
    older = {r["file"]: r for r in rows if r["status"] == "duplicate"}
    assert set(older) == {"class.zip/alice_02_primary_capsules.ipynb", "carol_02_primary_capsules.ipynb"}
    # The table still says what submitted/ holds, with its time.
    kept = {r["student_id"]: r for r in rows if r["status"] == "collected"}
    assert collect.parse_time(kept["alice"]["submitted_at"]) == local(2024, 3, 10)
    assert "bob" in kept and "already collected (the same file)" in kept["bob"]["notes"]
    # A newer download replaces it, and says so; a download without alice keeps her notebook.
    assert classroom.main(download(tmp_path / "newer", local(2024, 3, 12), "# newer")) == 0
    assert "replaced an older one collected before" in capsys.readouterr().out
    assert "# newer" in (submitted / "alice/02_primary_capsules/02_primary_capsules.ipynb").read_text()
    put(tmp_path / "bob-only", "bob_02_primary_capsules.ipynb", NB2)
    classroom.main(["collect", "02_primary_capsules", "--from", str(tmp_path / "bob-only"),
                    "--course-root", str(course)])
    status = {r["student_id"]: r for r in rows_of(course) if r["student_id"] == "alice"}
    assert status["alice"]["status"] == "collected" and "not in this download" in status["alice"]["notes"]


def failing_write(target):
    """os.write that writes half of what it is given to a file named like ``target``, then
    fails as a full disk does."""
    import errno
    real = os.write

    def write(fd, data):
        if target in os.readlink(f"/proc/self/fd/{fd}"):
            real(fd, bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data)
    return write


def test_collected_csv_and_the_roster_are_written_whole_or_not_at_all(tmp_path, monkeypatch, capsys):
    d = tmp_path / "download"
    put(d, "alice_02_primary_capsules.ipynb", NB2)
    course = tmp_path / "course"
    (tmp_path / "roster.csv").write_text(ROSTER)
    args = ["collect", "02_primary_capsules", "--from", str(d), "--course-root", str(course),
            "--roster", str(tmp_path / "roster.csv")]
    classroom.main(args)
    table, roster = (course / "collected.csv").read_bytes(), (course / "roster.csv").read_bytes()
    put(d, "bob_02_primary_capsules.ipynb", NB2)
    capsys.readouterr()
    monkeypatch.setattr(os, "write", failing_write("collected.csv"))
    assert classroom.main(args) == 2
    monkeypatch.undo()
    said = capsys.readouterr().err.strip().splitlines()
    assert len(said) == 1 and "collected.csv" in said[0] and "No space left" in said[0]
    assert (course / "collected.csv").read_bytes() == table
    (tmp_path / "roster.csv").write_text(ROSTER + "zoe,Zoe Saldana,,,\n")
    monkeypatch.setattr(os, "write", failing_write("roster.csv"))
    assert classroom.main(args) == 2
    monkeypatch.undo()
    assert (course / "roster.csv").read_bytes() == roster
    with pytest.raises(OSError, match="No space"):  # the function itself raises
        monkeypatch.setattr(os, "write", failing_write("table.csv"))
        collect.write_atomic(course / "table.csv", "x" * 1000)
    monkeypatch.undo()
    assert not (course / "table.csv").exists()
    assert not [p.name for p in course.iterdir() if p.name.startswith(".")]  # no temporary files left
