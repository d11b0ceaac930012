"""Collect the students' notebooks however the LMS or the browser named them.

    capsnet-classroom collect 02_primary_capsules --from ~/Downloads/submissions
    capsnet-classroom collect ALL --from submissions.zip --roster roster.csv
    make collect NB=02_primary_capsules FROM=~/Downloads/submissions [ROSTER=roster.csv]

``--from`` is a folder or a zip, as downloaded: loose notebooks, zips (also zips in
zips), nested folders. Each file is mapped to (student, notebook) and copied to
``classroom/submitted/<student>/<notebook>/<notebook>.ipynb``, where ``nbgrader
autograde`` looks. Names it recognises (any case; ``.ipynb`` only)::

    alice_02_primary_capsules.ipynb           the plain name (also "-", " " or "." between)
    alice_02_primary_capsules (1).ipynb       browser copies; also -Copy1, _final, -1, v2 ...
    02_primary_capsules - alice.ipynb         the student after the notebook
    alice/primary_capsules.ipynb              the student's folder; the notebook's words alone
    smithalice_12345_67890_02_primary_capsules.ipynb         Canvas: name_userid_fileid_file
    smithalice_LATE_12345_67890_02_primary_capsules-1.ipynb  Canvas, late, resubmitted
    Alice Smith_123456_assignsubmission_file_/02_primary_capsules.ipynb   Moodle, per-student folders
    Alice Smith_123456_assignsubmission_file_02_primary_capsules.ipynb    Moodle, one folder

The notebook comes from the file name (its id, or its words without the number, the longest
match winning: ``does_routing_help`` is 08, not 03), else from a folder named after it; when
the notebook's own exercise cells (nbgrader grade ids) belong to another notebook, they win,
and the table says so. The student comes from the LMS's name pattern, else what is left of
the file name around the notebook's name, else the nearest folder that is not a notebook's or
a download's (``submissions``, ``downloads``, ...).

Without a roster, a student id is the name made lowercase ASCII, runs of other characters
made ``-`` (``Alice Smith`` -> ``alice-smith``, ``smithalice`` stays). With ``--roster`` (a CSV
with a column ``id`` and optionally ``name`` or ``first_name``/``last_name``, ``email``,
``canvas_id``, ``moodle_id``; ``classroom/roster.csv`` is used when present, and a roster
given elsewhere is copied there for ``export``), the LMS's user numbers are matched first
(``canvas_id``; ``moodle_id``, though Moodle may number participants per assignment), then the
name in any order and case (``smithalice``, ``Alice Smith``, ``alice.smith@uni.edu``, the id).

It prints one line per file found: the student and notebook, or why not. Two files for one
student and notebook: the newest (modification time; in a zip, its entry's time) is kept, the
other is reported. Roster students (else every student seen) with no file for a notebook
collected in this run (or the one named) are listed as ``missing``. The table is saved as
``classroom/collected.csv`` (columns file, student_id, assignment, status, notes; status is
collected, not matched, duplicate, skipped (another notebook than the one named), ignored
(``__MACOSX``, checkpoints) or missing); rows of notebooks outside this run are kept. The exit
status is 1 when a file was not matched or was a duplicate (everything else is collected
first), 0 otherwise.
"""
import argparse
import csv
import io
import json
import re
import shutil
import sys
import time
import unicodedata
import zipfile
from pathlib import Path, PurePosixPath

from capslib.classroom.paths import COURSE, STUDENT  # noqa: E402
ROSTER = "roster.csv"
COLLECTED = "collected.csv"
HELP = "copy downloaded submissions (any LMS or browser naming) to classroom/submitted/"
FIELDS = ["file", "student_id", "assignment", "status", "notes"]

CANVAS = re.compile(r"^(?P<name>[^_]+?)(?P<late>_late)?_(?P<user>\d{3,})_(?P<file>\d{3,})_(?P<rest>.+)$", re.I)
MOODLE = re.compile(r"^(?P<name>.+?)_(?P<user>\d+)_assignsubmission_file_(?P<rest>.*)$", re.I)
# Words browsers, Jupyter and students add to a file name (after the notebook's name).
NOISE = re.compile(r"^(final|copy\d*|v\d+|version\d*|submission|submit|handin|latest|new|"
                   r"updated|done|checkpoint|ipynb|late|\d+)$")
# Folders that name a download, not a student.
GENERIC_FOLDERS = {"submissions", "submission", "submitted", "downloads", "download", "archive",
                   "extracted", "notebooks", "notebook", "student", "students", "homework",
                   "assignments", "assignment", "files", "uploads", "classroom", "course"}
JUNK = {"__MACOSX": "macOS metadata", ".ipynb_checkpoints": "Jupyter checkpoint",
        ".DS_Store": "macOS metadata", "Thumbs.db": "Windows metadata", "desktop.ini": "Windows metadata"}


def tokens(text):
    """Lowercase ASCII words of ``text``: ``'Alice_02_Primary Capsules (1)'`` -> alice 02 primary capsules 1."""
    ascii_ = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return [t for t in re.split(r"[^a-z0-9]+", ascii_.lower()) if t]


def slug(name):
    """A student id from a name: ``'Alice Smith'`` -> ``'alice-smith'``."""
    return "-".join(tokens(name))


def squash(name):
    """A name for comparing: lowercase letters and digits only (``'Smith, Alice'`` -> ``'smithalice'``)."""
    return "".join(tokens(name))


# -- what is in --from ----------------------------------------------------------------------

class Found:
    """One file as the teacher got it: ``path`` shown (relative to --from; a zip's entries
    under the zip's name), folder names above it, modification time, and its bytes."""

    def __init__(self, path, mtime, read):
        self.path, self.mtime, self.read = path, mtime, read
        parts = PurePosixPath(path).parts
        self.name, self.folders = parts[-1], list(parts[:-1])


def walk(source):
    """Every file under ``source`` (a folder, a zip or one file), zips opened, in name order."""
    source = Path(source)
    if source.is_file():
        return list(_file(source, source.name))
    found = []
    for path in sorted((p for p in source.rglob("*") if p.is_file()), key=lambda p: str(p).lower()):
        found += _file(path, path.relative_to(source).as_posix())
    return found


def _file(path, shown):
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            return _zip(zf, shown)
    return [Found(shown, path.stat().st_mtime, path.read_bytes)]


def _zip(zf, prefix):
    found = []
    for info in sorted(zf.infolist(), key=lambda i: i.filename.lower()):
        if info.is_dir():
            continue
        shown = f"{prefix}/{info.filename}"
        data = zf.read(info)
        if info.filename.lower().endswith(".zip") and zipfile.is_zipfile(io.BytesIO(data)):
            with zipfile.ZipFile(io.BytesIO(data)) as inner:
                found += _zip(inner, shown)
            continue
        mtime = time.mktime(info.date_time + (0, 0, -1))
        found.append(Found(shown, mtime, lambda data=data: data))
    return found


# -- which notebook, which student ---------------------------------------------------------

def notebook_in(text, notebooks):
    """(notebook, tokens before, tokens after) for the notebook named in ``text``, or None.

    Its full id (``02_primary_capsules``) beats its words alone (``primary_capsules``); among
    words, the longest match wins (``does_routing_help`` is 08, not 03's ``routing``); a tie
    between two notebooks is no match."""
    words = tokens(text)
    found = []
    for nb in notebooks:
        full = tokens(nb)
        for score, wanted in ((100 + len(full), full), (len(full) - 1, full[1:])):
            at = _find(words, wanted)
            if at is not None:
                found.append((score, nb, words[:at], words[at + len(wanted):]))
                break
    found.sort(key=lambda f: -f[0])
    if not found or (len(found) > 1 and found[1][0] == found[0][0]):
        return None
    return found[0][1:]


def _find(words, wanted):
    """Index of ``wanted`` as consecutive items of ``words``, or None."""
    for i in range(len(words) - len(wanted) + 1):
        if wanted and words[i:i + len(wanted)] == wanted:
            return i
    return None


def student_folder(folder, notebooks):
    """A folder's name as a student's, or '' for a notebook's or a download's folder."""
    name = folder[:-4] if folder.lower().endswith(".zip") else folder
    bare = "".join(t for t in tokens(name) if not t.isdigit())  # "submissions (2)"
    if not bare or bare in GENERIC_FOLDERS or notebook_in(name, notebooks):
        return ""
    return name


def lms_identity(found):
    """(name, lms, user number, late, file name left) from Canvas's or Moodle's pattern in the
    file name or its folders (nearest first), or None."""
    m = MOODLE.match(found.name)
    if m:
        return m["name"], "moodle", m["user"], False, m["rest"]
    for folder in reversed(found.folders):
        m = MOODLE.match(folder)
        if m:
            return m["name"], "moodle", m["user"], False, found.name
    for text in [found.name, *reversed(found.folders)]:
        m = CANVAS.match(text)
        if m:
            rest = m["rest"] if text == found.name else found.name
            return m["name"], "canvas", m["user"], bool(m["late"]), rest
    return None


def content_notebook(data, grade_ids):
    """The notebook whose exercise cells (nbgrader grade ids) the file holds, or None."""
    nb = json.loads(data)
    owners = {}
    for cell in nb.get("cells", []):
        owner = grade_ids.get(cell.get("metadata", {}).get("nbgrader", {}).get("grade_id"))
        if owner:
            owners[owner] = owners.get(owner, 0) + 1
    ranked = sorted(owners.items(), key=lambda kv: -kv[1])
    if not ranked or (len(ranked) > 1 and ranked[1][1] == ranked[0][1]):
        return None
    return ranked[0][0]


def is_notebook(data):
    """'' for a Jupyter notebook, else why not."""
    try:
        nb = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        return "not a notebook (not JSON)"
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list) or "nbformat" not in nb:
        return "not a notebook (JSON without cells)"
    return ""


def identify(found, notebooks, grade_ids):
    """What one file is: {ignored} for junk, else {notebook, name, lms, user, notes, why}, where
    ``why`` (empty when the file can be collected) says what is wrong; the notebook and the
    name are filled in as far as they can be read, to show whose file it is."""
    for part in [*found.folders, found.name]:
        if part in JUNK or part.startswith("._"):
            return {"ignored": JUNK.get(part, "macOS metadata")}
    if not found.name.lower().endswith(".ipynb"):
        why = f"not a notebook ({PurePosixPath(found.name).suffix or 'no extension'})"
    else:
        why = is_notebook(found.read())
    lms = lms_identity(found)
    rest = lms[4] if lms else found.name
    stem = PurePosixPath(rest).stem if "." in rest else rest
    notes, notebook, left = [], "", []
    match = notebook_in(stem, notebooks)
    if match:
        notebook, before, after = match
        left = before or [t for t in after if not NOISE.match(t)]
    else:
        for folder in reversed(found.folders):
            if notebook_in(folder, notebooks):
                notebook = notebook_in(folder, notebooks)[0]
                left = [t for t in tokens(stem) if not NOISE.match(t)]
                break
    inside = "" if why else content_notebook(found.read(), grade_ids)
    if inside and inside != notebook:
        if notebook:
            notes.append(f"named {notebook} but holds {inside}'s exercises")
        notebook = inside
    got = {"notebook": notebook, "name": "", "lms": "", "user": "", "notes": notes, "why": why}
    if lms:
        name, got["lms"], got["user"], late = lms[:4]
        got["name"] = "" if got["lms"] == "moodle" and name.lower() == "participant" else name
        if late:
            notes.append("late (Canvas)")
    else:
        got["name"] = " ".join(left) or next(
            filter(None, (student_folder(f, notebooks) for f in reversed(found.folders))), "")
    if not why and not notebook:
        got["why"] = "no course notebook's name in the file name and no course exercise in it"
    elif not why and not squash(got["name"]) and not got["user"]:
        got["why"] = "no student in the file or folder name"
    return got


# -- the roster ----------------------------------------------------------------------------

class Roster:
    """Student ids and the keys (names, e-mails, LMS numbers) that lead to them."""

    def __init__(self, path):
        self.ids, self.keys = [], {}
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            if "id" not in [(name or "").strip().lower() for name in reader.fieldnames or []]:
                raise SystemExit(f"roster {path}: no column 'id' (columns: {reader.fieldnames})")
            for row in reader:
                row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
                sid = row.get("id", "")
                if not sid:
                    continue
                if sid in self.ids:
                    raise SystemExit(f"roster {path}: the id {sid!r} appears twice")
                self.ids.append(sid)
                first, last = row.get("first_name", ""), row.get("last_name", "")
                name = row.get("name", "") or f"{first} {last}".strip()
                email = row.get("email", "")
                keys = {("name", squash(sid)), ("name", squash(name)),
                        ("name", squash(email)), ("name", squash(email.partition("@")[0]))}
                words = tokens(name)
                if len(words) > 1:  # Canvas writes last name first: "smithalice"
                    keys |= {("name", "".join(words[1:] + words[:1])),
                             ("name", "".join(words[-1:] + words[:-1]))}
                for lms in ("canvas", "moodle"):
                    for number in re.split(r"[\s;]+", row.get(f"{lms}_id", "")):
                        keys.add((lms, number))
                for key in keys:
                    if key[1]:
                        self.keys.setdefault(key, set()).add(sid)

    def find(self, name, lms="", user=""):
        """(roster id, '') or (None, why)."""
        for key in ([(lms, user)] if lms and user else []) + [("name", squash(name))]:
            ids = self.keys.get(key, set())
            if len(ids) == 1:
                return next(iter(ids)), ""
            if len(ids) > 1:
                return None, f"{name or user!r} fits several roster students: {', '.join(sorted(ids))}"
        shown = name or f"{lms} user {user}"
        return None, f"unknown student {shown!r} (not in the roster)"


# -- collecting ----------------------------------------------------------------------------

def course_notebooks(student=STUDENT):
    """Assignment ids and {grade id: assignment} from the student copies."""
    names, grade_ids = [], {}
    for path in sorted(Path(student).glob("[0-9][0-9]_*.ipynb")):
        names.append(path.stem)
        for cell in json.loads(path.read_text())["cells"]:
            gid = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
            if gid:
                grade_ids[gid] = path.stem
    return names, grade_ids


def collect(source, notebook="ALL", course_root=COURSE, roster=None, student=STUDENT):
    """Copy what ``source`` holds to ``course_root/submitted``; return the table's rows
    (dicts with FIELDS) and write them to ``course_root/collected.csv``."""
    course_root = Path(course_root)
    notebooks, grade_ids = course_notebooks(student)
    if notebook != "ALL" and notebook not in notebooks:
        raise SystemExit(f"collect: unknown notebook {notebook!r}; one of {', '.join(notebooks)} or ALL")
    roster = Roster(roster) if roster else None
    rows, chosen = [], {}
    for found in walk(source):
        row = {"file": found.path, "student_id": "", "assignment": "", "status": "", "notes": ""}
        rows.append(row)
        got = identify(found, notebooks, grade_ids)
        if "ignored" in got:
            row.update(status="ignored", notes=got["ignored"])
            continue
        row["assignment"] = got["notebook"]
        sid, why = "", ""
        if roster and (got["name"] or got["user"]):
            sid, why = roster.find(got["name"], got["lms"], got["user"])
        elif got["name"] or got["user"]:
            sid = slug(got["name"]) or f"{got['lms']}-{got['user']}"
        row["student_id"] = sid or ""
        why = got["why"] or why
        row["notes"] = "; ".join(got["notes"])
        if why:
            row.update(status="not matched", notes="; ".join(filter(None, [why, row["notes"]])))
        elif notebook != "ALL" and got["notebook"] != notebook:
            row.update(status="skipped", notes=f"for {got['notebook']}, not {notebook}")
        else:
            row["status"] = "collected"
            chosen.setdefault((sid, got["notebook"]), []).append((found.mtime, found.path, found, row))

    for (sid, nb), files in chosen.items():
        files.sort(key=lambda f: (f[0], f[1]))
        *older, (_, kept_path, kept, kept_row) = files
        for _, _, _, row in older:
            row.update(status="duplicate", notes=f"older than {kept_path}: kept the newest")
        if older:
            kept_row["notes"] = "; ".join(filter(None, [kept_row["notes"],
                                                        f"newest of {len(files)} files"]))
        dest = course_root / "submitted" / sid / nb / f"{nb}.ipynb"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(kept.read())

    scope = [notebook] if notebook != "ALL" else sorted({nb for _, nb in chosen})
    seen = {r["student_id"] for r in rows if r["status"] in ("collected", "duplicate", "skipped")}
    students = roster.ids if roster else sorted(seen)
    for sid in students:
        for nb in scope:
            if (sid, nb) not in chosen:
                rows.append({"file": "", "student_id": sid, "assignment": nb, "status": "missing",
                             "notes": "no submission"})
    save_table(rows, course_root / COLLECTED, scope)
    return rows


def save_table(rows, path, scope):
    """Write ``rows`` to ``path``, keeping earlier rows of notebooks outside ``scope``."""
    kept = []
    if path.exists():
        with open(path, newline="") as f:
            kept = [r for r in csv.DictReader(f) if r.get("assignment") and r["assignment"] not in scope]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(kept + rows)


def format_table(rows):
    """The table as text: file, student, notebook, status (and why)."""
    shown = [("file", "student", "notebook", "status")]
    for r in rows:
        status = r["status"] if not r["notes"] else f"{r['status']}: {r['notes']}"
        shown.append((r["file"] or "-", r["student_id"] or "-", r["assignment"] or "-", status))
    widths = [max(len(row[i]) for row in shown) for i in range(3)]
    return "\n".join(f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:<{widths[2]}}  {d}".rstrip()
                     for a, b, c, d in shown)


def add_arguments(parser):
    """The options of ``capsnet-classroom collect``."""
    parser.add_argument("notebook", help="assignment id (02_primary_capsules) or ALL")
    parser.add_argument("--from", dest="source", type=Path, required=True,
                        help="the downloaded submissions: a folder or a zip")
    parser.add_argument("--roster", type=Path, default=None,
                        help="CSV with a column id (name, first_name, last_name, email, canvas_id, "
                             "moodle_id optional); default classroom/roster.csv when present")
    parser.add_argument("--course-root", type=Path, default=COURSE, help=argparse.SUPPRESS)
    parser.set_defaults(run=run)


def run(args):
    """Collect, print the table and a summary; 1 when a file was not placed."""
    if not args.source.exists():
        raise SystemExit(f"collect: {args.source} does not exist")
    notebook = "ALL" if args.notebook.upper() == "ALL" else args.notebook
    notebooks = course_notebooks()[0]
    if notebook != "ALL" and notebook not in notebooks:
        raise SystemExit(f"collect: unknown notebook {notebook!r}; one of {', '.join(notebooks)} or ALL")
    course_root = Path(args.course_root)
    roster = args.roster
    saved = course_root / ROSTER
    if roster and not roster.is_file():
        raise SystemExit(f"collect: roster {roster} does not exist")
    if roster:
        Roster(roster)  # a bad roster stops here, before anything is written
    if roster and (not saved.exists() or saved.read_bytes() != roster.read_bytes()):
        course_root.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(roster, saved)
        print(f"roster copied to {saved} (export reads it)")
    elif roster is None and saved.exists():
        roster = saved
    rows = collect(args.source, notebook, course_root, roster)
    print(format_table(rows))
    count = {s: sum(r["status"] == s for r in rows) for s in ("collected", "not matched", "duplicate",
                                                              "missing")}
    print(f"\ncollected {count['collected']} notebooks into {course_root / 'submitted'}; "
          f"{count['missing']} missing; table in {course_root / COLLECTED}")
    bad = count["not matched"] + count["duplicate"]
    if bad:
        print(f"{bad} files not collected (not matched or older duplicates): see above. Rename or "
              f"move them, or add the student to the roster, and collect again.")
        return 1
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
