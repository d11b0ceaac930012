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
    Alice Smith/Version 2/notebook.ipynb      Teams, Google Classroom: a folder per student
    smithalice_12345_67890_02_primary_capsules.ipynb         Canvas: name_userid_fileid_file
    smithalice_LATE_12345_67890_02_primary_capsules-1.ipynb  Canvas, late, resubmitted
    Alice Smith_123456_assignsubmission_file_/02_primary_capsules.ipynb   Moodle, per-student folders
    Alice Smith_123456_assignsubmission_file_02_primary_capsules.ipynb    Moodle, one folder
    HW2_asmith_attempt_2024-03-05-11-32-10_02_primary_capsules.ipynb      Blackboard (+ its .txt receipt)
    1234-5678 - Smith, Alice - Mar 5, 2024 1132 AM - 02_primary_capsules.ipynb   Brightspace (+ index.html)

The notebook comes from the file name (its id, or its words without the number, the longest
match winning: ``does_routing_help`` is 08, not 03), else from the LMS's assignment name or a
folder named after it; when the notebook's own exercise cells (nbgrader grade ids) belong to
another notebook, they win, and the table says so. The student comes from the LMS's name
pattern, else what is left of the file name around the notebook's name, else the nearest
folder that is not a notebook's, a version's or a download's (``submissions``, ``Version 2``,
``Submitted files``, ...); with a roster, the first of these the roster knows.

Without a roster, a student id is the name made lowercase ASCII, runs of other characters
made ``-`` (``Alice Smith`` -> ``alice-smith``, ``smithalice`` stays). With ``--roster`` (a CSV
with a column ``id`` and optionally ``name`` or ``first_name``/``last_name``, ``email``,
``canvas_id``, ``moodle_id``; as Excel saves it in any locale: ``,``, ``;`` or tab, UTF-8 with or
without BOM, UTF-16 or Windows-1252; ``classroom/roster.csv`` is used when present, and a roster
given elsewhere is copied there for ``export``), the LMS's user numbers are matched first
(``canvas_id``; ``moodle_id``, though Moodle may number participants per assignment), then the
name in any order and case (``smithalice``, ``Alice Smith``, ``alice.smith@uni.edu``, the id).
A roster that cannot be read stops the command with one line and exit status 2.

Submission time: from the LMS's file name (Blackboard, Brightspace), else the zip entry's
time, else the file's modification time (which may be when it was downloaded). Zip and
file-name times are local times of this computer's time zone. The first two are written to
``submitted/<student>/<notebook>/timestamp.txt`` (nbgrader's format, UTC), so that nbgrader's
late penalties apply; a file's modification time is only used to choose between files.

It prints one line per file found: the student and notebook, or why not. Two files for one
student and notebook: the newest is kept, the other reported; two with the same time: one is
kept (the last by name) and both lines say so. A collect from an older download never replaces
a newer notebook already collected (its ``timestamp.txt`` or its row in the table), and says
so. Roster students (else every student seen) with no file for a notebook collected in this
run (or the one named) are listed as ``missing``, or as having sent an unreadable file. Links
are never followed. Zips are read entry by entry within bounds (``Limits``: size, count,
nesting, paths inside the zip). The table is saved as ``classroom/collected.csv`` (columns
file, student_id, assignment, status, notes, submitted_at, time_from, late, sha256; status is
collected, not matched, duplicate, skipped (another notebook than the one named, a link, a
path out of a zip), ignored (``__MACOSX``, checkpoints, LMS receipts) or missing); rows of
notebooks outside this run are kept. The exit status is 1 when a file was not matched or was a
duplicate (everything else is collected first), 2 for an unreadable roster or a table that
could not be written (written atomically: the old one stays whole), 0 otherwise.
"""
import argparse
import csv
import hashlib
import io
import json
import os
import re
import stat
import sys
import tempfile
import time
import unicodedata
import zipfile
import zlib
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from capslib.classroom.paths import COURSE, STUDENT  # noqa: E402
ROSTER = "roster.csv"
COLLECTED = "collected.csv"
TIMESTAMP = "timestamp.txt"  # nbgrader's name, beside the notebook in submitted/
HELP = "copy downloaded submissions (any LMS or browser naming) to classroom/submitted/"
FIELDS = ["file", "student_id", "assignment", "status", "notes", "submitted_at", "time_from",
          "late", "sha256"]
MB = 1_000_000

CANVAS = re.compile(r"^(?P<name>[^_]+?)(?P<late>_late)?_(?P<user>\d{3,})_(?P<file>\d{3,})_(?P<rest>.+)$", re.I)
MOODLE = re.compile(r"^(?P<name>.+?)_(?P<user>\d+)_assignsubmission_file_(?P<rest>.*)$", re.I)
BLACKBOARD = re.compile(r"^(?P<assignment>.+)_(?P<user>[^_]+)_attempt_"
                        r"(?P<date>\d{4}-\d\d-\d\d-\d\d-\d\d-\d\d)_(?P<rest>.+)$", re.I)
BLACKBOARD_RECEIPT = re.compile(r"^.+_[^_]+_attempt_\d{4}(-\d\d){5}\.txt$", re.I)
BRIGHTSPACE = re.compile(r"^\d+-\d+ - (?P<name>.+?) - (?P<date>[A-Za-z]{3,9}\.? \d{1,2}, \d{4} "
                         r"\d{3,4} [AaPp][Mm]) - (?P<rest>.+)$")
MONTHS = {m: i for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug",
                                      "sep", "oct", "nov", "dec"), 1)}
# Words browsers, Jupyter and students add to a file name (after the notebook's name).
NOISE = re.compile(r"^(final|copy\d*|v\d+|version\d*|submission|submit|handin|latest|new|"
                   r"updated|done|checkpoint|ipynb|late|\d+)$")
# Folders that name a download, a version or an attempt, not a student: every word of the
# folder's name is one of these (or a number): "Submitted files", "Version 2", "submissions (2)".
GENERIC_WORDS = {"submissions", "submission", "submitted", "downloads", "download", "archive",
                 "extracted", "notebooks", "notebook", "student", "students", "homework",
                 "assignments", "assignment", "files", "file", "uploads", "classroom", "course",
                 "version", "versions", "attempt", "attempts", "working", "turned", "in", "handed",
                 "draft", "final", "copy", "latest", "of", "my", "work", "v", "zip"}
JUNK = {"__MACOSX": "macOS metadata", ".ipynb_checkpoints": "Jupyter checkpoint",
        ".DS_Store": "macOS metadata", "Thumbs.db": "Windows metadata", "desktop.ini": "Windows metadata"}
CELL_TYPES = ("code", "markdown", "raw")


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


def one_line(text):
    """``text`` on one line (exception messages can hold newlines)."""
    return " ".join(str(text).split())


# -- times ---------------------------------------------------------------------------------

def format_time(seconds):
    """Epoch seconds as UTC text nbgrader's ``parse_utc`` reads: ``2024-03-05 10:32:10 UTC``
    (with ``.ffffff`` when there are fractions); '' for None."""
    if seconds is None:
        return ""
    moment = datetime.fromtimestamp(seconds, timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S" + (".%f" if moment.microsecond else "") + " UTC")


def parse_time(text):
    """Epoch seconds from ``format_time``'s text, nbgrader's ``timestamp.txt`` (``%Y-%m-%d
    %H:%M:%S.%f %Z`` or ISO; no zone means UTC, as nbgrader reads it), or None."""
    text = (text or "").strip()
    if not text:
        return None
    if text.endswith(" UTC"):
        text = text[:-4] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        try:
            from nbgrader.utils import parse_utc  # other zones nbgrader wrote
            moment = parse_utc(text)
        except Exception:
            return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _local(year, month, day, hour, minute, second=0):
    """Epoch seconds of a local time of this computer (LMSs write the server's local time)."""
    return time.mktime((year, month, day, hour, minute, second, 0, 0, -1))


def blackboard_time(text):
    """Epoch seconds of Blackboard's ``2024-03-05-11-32-10`` (local time)."""
    return _local(*(int(p) for p in text.split("-")))


def brightspace_time(text):
    """Epoch seconds of Brightspace's ``Mar 5, 2024 1132 AM`` (local time), or None."""
    m = re.match(r"([A-Za-z]{3})[A-Za-z]*\.? (\d{1,2}), (\d{4}) (\d{1,2})(\d\d) ([AaPp])", text)
    if not m or m[1].lower() not in MONTHS:
        return None
    hour = int(m[4]) % 12 + (12 if m[6].lower() == "p" else 0)
    return _local(int(m[3]), MONTHS[m[1].lower()], int(m[2]), hour, int(m[5]))


# -- writing without cut files -------------------------------------------------------------

def write_atomic(path, data):
    """Write ``data`` (bytes, or str as UTF-8) to ``path`` through a temporary file in the
    same folder and ``os.replace``: a failure (a full disk: OSError) leaves the old file
    whole and no temporary file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = data.encode() if isinstance(data, str) else data
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view[:1 << 20]):]  # os.write may write less
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, mode)  # mkstemp's 0600 would hide grades from a shared course group
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError) and not e.filename:  # say which file could not be written
            raise OSError(e.errno, e.strerror or str(e), str(path)) from e
        raise


def csv_text(rows, fields):
    """``rows`` (dicts) as CSV text with a header; keys outside ``fields`` are left out."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore", restval="")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


# -- the roster ----------------------------------------------------------------------------

class RosterError(SystemExit):
    """A roster that cannot be read: ``str()`` is one line saying what to do; exit status 2."""

    def __init__(self, message):
        super().__init__(2)
        self.message = message

    def __str__(self):
        return self.message


def _decode(data):
    """Text of a CSV as Excel saves it: UTF-16 (BOM), UTF-8 with or without BOM, else
    Windows-1252 (Excel's "CSV" in Western locales); None when it is none of these."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        encodings = ("utf-16",)
    else:
        encodings = ("utf-8-sig", "cp1252")
    for encoding in encodings:
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return None


def read_roster(path):
    """(column names in lower case, rows as dicts of stripped text) of a roster CSV with a
    column ``id`` (any case), as Excel saves it in any locale: ``,``, ``;`` or tab (sniffed),
    UTF-8 with or without BOM, UTF-16, Windows-1252. Rows without an id are left out.

    Raises ``RosterError`` (one line) for a file that cannot be read, has no ``id`` column or
    holds an id twice."""
    where = f"roster {path}"
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise RosterError(f"{where}: cannot be read ({e.strerror or e}): give a CSV file with a column id")
    text = _decode(data)
    if text is None or "\x00" in text:
        raise RosterError(f"{where}: not text (a spreadsheet?): save it from Excel as "
                          "'CSV UTF-8 (Comma delimited)' with a column id")
    text = text.lstrip("\ufeff")
    if not text.strip():
        raise RosterError(f"{where}: empty: give a CSV with a column id and one row per student")
    header_line = text.splitlines()[0]
    candidates = []
    try:  # Excel writes ";" where "," is the decimal mark
        candidates.append(csv.Sniffer().sniff(text[:8192], delimiters=",;\t").delimiter)
    except csv.Error:
        pass
    candidates += sorted(",;\t", key=lambda d: -header_line.count(d))
    try:
        for delimiter in candidates:
            rows = list(csv.reader(io.StringIO(text), delimiter=delimiter))
            header = [(h or "").strip().lstrip("\ufeff").strip().lower() for h in rows[0]]
            if "id" in header:
                break
    except csv.Error as e:
        raise RosterError(f"{where}: not a readable CSV ({one_line(e)}): save it from Excel as CSV")
    if "id" not in header:
        shown = ", ".join(h for h in (c.strip() for c in rows[0]) if h) or "none"
        raise RosterError(f"{where}: no column 'id' (columns: {shown}): add a column id "
                          "(one per student, the id used in submitted/ and grades.csv)")
    out, seen = [], set()
    for cells in rows[1:]:
        row = {}
        for name, value in zip(header, cells):
            if name and name not in row:
                row[name] = (value or "").strip()
        sid = row.get("id", "")
        if not sid:
            continue
        if sid in seen:
            raise RosterError(f"{where}: the id {sid!r} appears twice: give each student one row")
        seen.add(sid)
        out.append(row)
    return header, out


class Roster:
    """Student ids and the keys (names, e-mails, LMS numbers) that lead to them.
    Raises ``RosterError`` for a roster ``read_roster`` cannot read."""

    def __init__(self, path):
        self.ids, self.keys = [], {}
        for row in read_roster(path)[1]:
            sid = row["id"]
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
        return None, f"unknown student {shown!r} (not in the roster): add them or rename the file"


# -- what is in --from ----------------------------------------------------------------------

class Limits:
    """Bounds on reading zips: ``total_mb`` uncompressed per archive given (its nested zips
    included), ``file_mb`` per file (a loose one too), ``files`` entries per archive,
    ``depth`` levels of zips (the archive itself is 1). MB are 10**6 bytes."""

    def __init__(self, total_mb=200, file_mb=100, files=10_000, depth=3):
        self.total, self.file = int(total_mb * MB), int(file_mb * MB)
        self.files, self.depth = files, depth


class Found:
    """One file as the teacher got it: ``path`` shown (relative to --from; a zip's entries
    under the zip's name), folder names above it, its time (epoch seconds) and where that
    came from, where its bytes are (``disk``), and ``why`` it cannot be read or ``skip``
    why it was not read at all (a link, a path out of a zip)."""

    def __init__(self, path, mtime, disk=None, why="", skip="", time_from="file modified"):
        self.path, self.mtime, self.disk = path, mtime, disk
        self.why, self.skip, self.time_from = why, skip, time_from
        parts = PurePosixPath(path).parts
        self.name, self.folders = parts[-1], list(parts[:-1])

    def read(self):
        return Path(self.disk).read_bytes()


class _TooBig(Exception):
    pass


def _mb(size):
    """Bytes as MB for a message: ``1,000`` or ``0.2``."""
    return f"{size / MB:,.0f}" if size >= 10 * MB else f"{size / MB:.1f}"


def walk(source, tmp, limits=None):
    """Every file under ``source`` (a folder, a zip or one file) as ``Found``, zips read entry
    by entry into ``tmp`` within ``limits``, in name order. Links are reported, not followed."""
    return _Walker(Path(tmp), limits or Limits()).walk(Path(source))


class _Walker:
    def __init__(self, tmp, limits):
        self.tmp, self.limits, self.count = tmp, limits, 0

    def walk(self, source):
        if not source.is_dir():  # the teacher named it: a link given as --from is followed
            return self.file(source.resolve(), source.name)
        entries = []

        def unreadable(error):
            rel = Path(error.filename).relative_to(source).as_posix() if error.filename else "."
            entries.append((rel, None, f"a folder that cannot be read ({error.strerror})"))

        for folder, dirs, files in os.walk(source, onerror=unreadable):  # followlinks=False
            for name in list(dirs):
                if os.path.islink(os.path.join(folder, name)):
                    dirs.remove(name)  # never entered: it may lead out of the download
                    files.append(name)
            for name in files:
                path = Path(folder, name)
                entries.append((path.relative_to(source).as_posix(), path, ""))
        found = []
        for rel, path, why in sorted(entries, key=lambda e: e[0].lower()):
            found += self.file(path, rel) if path else [Found(rel, None, why=why)]
        return found

    def file(self, path, shown):
        try:
            st = os.lstat(path)
        except OSError as e:
            return [Found(shown, None, why=f"cannot be read ({e.strerror})")]
        if stat.S_ISLNK(st.st_mode):
            try:
                target = os.readlink(path)
            except OSError:
                target = "?"
            return [Found(shown, st.st_mtime, skip=f"a link (to {target}), not followed: copy the "
                                                   "file itself into the download if it is a submission")]
        if not stat.S_ISREG(st.st_mode):
            return [Found(shown, st.st_mtime, skip="not a regular file (a device or pipe): not read")]
        lower = shown.lower()
        if lower.endswith(".zip") or (not lower.endswith(".ipynb") and zipfile.is_zipfile(path)):
            budget = {"bytes": self.limits.total, "files": self.limits.files}
            return self.archive(path, shown, st.st_mtime, 1, budget)
        if st.st_size > self.limits.file:
            return [Found(shown, st.st_mtime, why=f"{_mb(st.st_size)} MB, more than the "
                                                  f"{_mb(self.limits.file)} MB a notebook may have")]
        return [Found(shown, st.st_mtime, disk=path)]

    def archive(self, path, shown, mtime, depth, budget):
        """The entries of the zip at ``path``, nested zips opened up to ``limits.depth``."""
        try:
            zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as e:
            return [Found(shown, mtime, why=f"a broken zip ({one_line(e)})")]
        found = []
        with zf:
            for info in sorted(zf.infolist(), key=lambda i: i.filename.lower()):
                if info.is_dir():
                    continue
                name = info.filename.replace("\\", "/")  # zips made on Windows
                entry = f"{shown}/{name}"
                try:
                    when = time.mktime(info.date_time + (0, 0, -1))
                except (OverflowError, ValueError):
                    when = mtime
                parts = PurePosixPath(name).parts
                if name.startswith("/") or ".." in parts or re.match(r"^[A-Za-z]:", name):
                    found.append(Found(entry, when, skip="a path leading out of the zip "
                                                         "(absolute or ../): not read"))
                    continue
                if info.create_system == 3 and stat.S_ISLNK(info.external_attr >> 16):
                    found.append(Found(entry, when, skip="a link inside the zip: not followed"))
                    continue
                budget["files"] -= 1
                if budget["files"] < 0:
                    found.append(Found(entry, when, why=f"{shown} holds more than "
                                       f"{self.limits.files} files: the rest were not read; unpack it "
                                       "and collect the folder"))
                    break
                found += self.entry(zf, info, entry, when, depth, budget)
        return found

    def entry(self, zf, info, shown, when, depth, budget):
        """One zip entry copied to ``tmp`` (its bytes counted as they come), or why not."""
        limit = min(self.limits.file, budget["bytes"])
        inner = shown.lower().endswith(".zip")
        if info.flag_bits & 0x1:
            return [Found(shown, when, why="encrypted: ask for it without a password")]
        if info.file_size > limit:  # zipfile stops at the declared size; the count below is a second guard
            return [Found(shown, when, why=self._too_big(info.file_size, budget))]
        if inner and depth >= self.limits.depth:
            return [Found(shown, when, why=f"a zip nested more than {self.limits.depth} deep: "
                                           "unpack it and collect the folder")]
        self.count += 1
        dest = self.tmp / f"{self.count}.bin"  # our name, never the entry's
        size = 0
        try:
            with zf.open(info) as src, open(dest, "wb") as out:
                while chunk := src.read(1 << 20):
                    size += len(chunk)
                    if size > limit:
                        raise _TooBig
                    out.write(chunk)
        except _TooBig:
            dest.unlink()
            return [Found(shown, when, why=self._too_big(size, budget))]
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, ValueError) as e:
            dest.unlink(missing_ok=True)
            return [Found(shown, when, why=f"a broken zip entry ({one_line(e)})")]
        budget["bytes"] -= size
        if inner:
            if not zipfile.is_zipfile(dest):
                return [Found(shown, when, why="a broken zip (not a zip archive)")]
            found = self.archive(dest, shown, when, depth + 1, budget)
            dest.unlink()
            return found
        return [Found(shown, when, disk=dest, time_from="zip entry")]

    def _too_big(self, size, budget):
        what = (f"more than the {_mb(self.limits.file)} MB a file may have"
                if size > self.limits.file else
                f"more than the {_mb(self.limits.total)} MB a download's zips may hold in all "
                "(--zip-limit)")
        return (f"expands to {_mb(size)}+ MB, {what} (a zip bomb?): not read; "
                "unpack it yourself if it is genuine")


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
    """A folder's name as a student's, or '' for a notebook's, a version's or a download's folder."""
    name = folder[:-4] if folder.lower().endswith(".zip") else folder
    words = [t for t in tokens(name) if not t.isdigit()]  # "submissions (2)"
    if (not words or all(w in GENERIC_WORDS for w in words) or "".join(words) in GENERIC_WORDS
            or notebook_in(name, notebooks)):
        return ""
    return name


def lms_identity(found):
    """What an LMS's naming says, or None: {name, lms, user, late, rest (the file name left),
    time (epoch seconds, from the name), hint (the LMS's assignment name)}."""
    def got(name, lms, user="", late=False, rest=None, when=None, hint=""):
        return {"name": name, "lms": lms, "user": user, "late": late,
                "rest": found.name if rest is None else rest, "time": when, "hint": hint}

    m = MOODLE.match(found.name)
    if m:
        return got(m["name"], "moodle", m["user"], rest=m["rest"])
    for folder in reversed(found.folders):
        m = MOODLE.match(folder)
        if m:
            return got(m["name"], "moodle", m["user"])
    m = BLACKBOARD.match(found.name)
    if m:
        return got(m["user"], "blackboard", m["user"], rest=m["rest"],
                   when=blackboard_time(m["date"]), hint=m["assignment"])
    m = BRIGHTSPACE.match(found.name)
    if m:
        last, comma, first = m["name"].partition(",")  # "Smith, Alice"
        name = f"{first.strip()} {last.strip()}" if comma else m["name"]
        return got(name, "brightspace", rest=m["rest"], when=brightspace_time(m["date"]))
    for text in [found.name, *reversed(found.folders)]:
        m = CANVAS.match(text)
        if m:
            return got(m["name"], "canvas", m["user"], bool(m["late"]),
                       rest=m["rest"] if text == found.name else None)
    return None


def read_notebook(data):
    """(notebook as a dict, '') for a Jupyter notebook nbgrader can read, else (None, why)."""
    try:
        nb = json.loads(data)
    except UnicodeDecodeError:
        return None, "not a notebook (not UTF-8 text)"
    except ValueError as e:
        return None, f"not a notebook (not JSON: {one_line(e)})"
    except RecursionError:
        return None, "not a notebook (JSON nested too deep)"
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list) or "nbformat" not in nb:
        return None, "not a notebook (JSON without cells)"
    for index, cell in enumerate(nb["cells"]):
        if not isinstance(cell, dict):
            return None, f"cell {index} is {type(cell).__name__}, not a cell"
        source = cell.get("source", "")
        if not (isinstance(source, str) or isinstance(source, list)
                and all(isinstance(line, str) for line in source)):
            bad = source if not isinstance(source, list) else next(
                line for line in source if not isinstance(line, str))
            return None, f"cell {index}'s source holds {type(bad).__name__} {str(bad)[:20]!r}, not text"
        if cell.get("cell_type") not in CELL_TYPES:
            return None, f"cell {index} has no valid cell_type ({str(cell.get('cell_type'))[:20]!r})"
        if not isinstance(cell.get("metadata", {}), dict):
            return None, f"cell {index}'s metadata is not a mapping"
    return nb, ""


def is_notebook(data):
    """'' for a Jupyter notebook, else why not."""
    return read_notebook(data)[1]


def _grade_id(cell):
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return meta.get("grade_id") if isinstance(meta, dict) else None


def content_notebook(nb, grade_ids):
    """The notebook whose exercise cells (nbgrader grade ids) ``nb`` (a dict, or its JSON)
    holds, or None."""
    nb = json.loads(nb) if isinstance(nb, (str, bytes)) else nb
    owners = {}
    for cell in nb.get("cells", []):
        owner = grade_ids.get(_grade_id(cell))
        if owner:
            owners[owner] = owners.get(owner, 0) + 1
    ranked = sorted(owners.items(), key=lambda kv: -kv[1])
    if not ranked or (len(ranked) > 1 and ranked[1][1] == ranked[0][1]):
        return None
    return ranked[0][0]


def identify(found, notebooks, grade_ids, index_folders=()):
    """What one file is: {ignored} for junk, {skipped} for what is not read, else {notebook,
    names, lms, user, late, time, time_from, notes, why}, where ``names`` are the possible
    students (best first) and ``why`` (empty when the file can be collected) says what is
    wrong; the notebook and names are filled in as far as they can be read, to show whose
    file it is."""
    for part in [*found.folders, found.name]:
        if part in JUNK or part.startswith("._"):
            return {"ignored": JUNK.get(part, "macOS metadata")}
    if BLACKBOARD_RECEIPT.match(found.name):
        return {"ignored": "Blackboard's receipt"}
    if found.name.lower() == "index.html" and "/".join(found.folders) in index_folders:
        return {"ignored": "Brightspace's index page"}
    if found.skip:
        return {"skipped": found.skip}
    nb, why = None, found.why
    if why:  # a broken zip, a bomb, an encrypted entry: sent, but not readable
        why = f"submitted, unreadable: {why}"
    elif not found.name.lower().endswith(".ipynb"):
        why = f"not a notebook ({PurePosixPath(found.name).suffix or 'no extension'}): ask for the .ipynb"
    else:
        nb, why = read_notebook(found.read())
        if why:
            why = f"submitted, unreadable: {why}: ask the student to send it again"
    lms = lms_identity(found)
    rest = lms["rest"] if lms else found.name
    stem = PurePosixPath(rest).stem if "." in rest else rest
    notes, notebook, left = [], "", []
    match = notebook_in(stem, notebooks)
    if match:
        notebook, before, after = match
        left = before or [t for t in after if not NOISE.match(t)]
    else:
        hints = ([lms["hint"]] if lms and lms["hint"] else []) + list(reversed(found.folders))
        for hint in hints:
            if notebook_in(hint, notebooks):
                notebook = notebook_in(hint, notebooks)[0]
                left = [t for t in tokens(stem) if not NOISE.match(t)]
                break
    inside = content_notebook(nb, grade_ids) if nb else None
    if inside and inside != notebook:
        if notebook:
            notes.append(f"named {notebook} but holds {inside}'s exercises")
        notebook = inside
    got = {"notebook": notebook, "names": [], "lms": "", "user": "", "late": "", "notes": notes,
           "why": why, "time": found.mtime, "time_from": found.time_from}
    if lms:
        got["lms"], got["user"] = lms["lms"], lms["user"]
        name = lms["name"]
        got["names"] = ["" if got["lms"] == "moodle" and name.lower() == "participant" else name]
        if lms["late"]:
            got["late"] = f"late ({lms['lms'].capitalize()})"
            notes.append(f"late ({lms['lms'].capitalize()})")
        if lms["time"] is not None:
            got["time"], got["time_from"] = lms["time"], f"{lms['lms']} file name"
    else:
        folders = [student_folder(f, notebooks) for f in reversed(found.folders)]
        got["names"] = list(dict.fromkeys(filter(None, [" ".join(left), *folders])))
    if not why and not notebook:
        got["why"] = "no course notebook's name in the file name and no course exercise in it"
    elif not why and not any(squash(n) for n in got["names"]) and not got["user"]:
        got["why"] = "no student in the file or folder name: rename it <student>_<notebook>.ipynb"
    return got


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


def sha256_of(data):
    return hashlib.sha256(data).hexdigest()


def read_table(path):
    """Rows of ``collected.csv`` (missing columns as ''), or [] when there is none or it
    cannot be read."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return [{k: (r.get(k) or "") for k in FIELDS} for r in csv.DictReader(f)]
    except (OSError, csv.Error, UnicodeDecodeError):
        return []


def _student(got, roster):
    """(student id, why not) from the possible names: without a roster the first; with one,
    the first the roster knows (the LMS's numbers first)."""
    names = got["names"] or [""]
    if not roster:
        return slug(names[0]) or (f"{got['lms']}-{got['user']}" if got["user"] else ""), ""
    if not any(names) and not got["user"]:
        return "", ""
    first_why = ""
    for name in names:
        sid, why = roster.find(name, got["lms"], got["user"])
        if sid:
            return sid, ""
        first_why = first_why or why
    return "", first_why


class _Candidate:
    """A file to collect; its bytes stay on disk until it is written (a class can be large)."""

    def __init__(self, found, row, got, sha):
        self.found, self.row, self.sha = found, row, sha
        self.time = got["time"]
        self.lms_time = got["time_from"] != "file modified"


def _already_there(folder, name, previous):
    """(sha256, epoch seconds or None) of a notebook already collected in ``folder``, or None.
    Its time: ``timestamp.txt``, else the earlier table's row for the same file."""
    path = folder / f"{name}.ipynb"
    if not path.is_file():
        return None
    sha = sha256_of(path.read_bytes())
    when = None
    try:
        when = parse_time((folder / TIMESTAMP).read_text(errors="replace"))
    except OSError:
        pass
    if when is None and previous and previous.get("sha256") == sha:
        when = parse_time(previous.get("submitted_at"))
    return sha, when


def _place(kept, folder, name):
    """Write the kept file and its timestamp.txt (or remove a stale one)."""
    write_atomic(folder / f"{name}.ipynb", kept.found.read())
    stamp = folder / TIMESTAMP
    if kept.lms_time:
        moment = datetime.fromtimestamp(kept.time, timezone.utc)
        write_atomic(stamp, moment.strftime("%Y-%m-%d %H:%M:%S.%f %Z") + "\n")  # nbgrader's format
    else:
        stamp.unlink(missing_ok=True)  # the earlier submission's time is not this one's


def collect(source, notebook="ALL", course_root=COURSE, roster=None, student=STUDENT, limits=None):
    """Copy what ``source`` holds to ``course_root/submitted``; return the table's rows
    (dicts with FIELDS) and write them to ``course_root/collected.csv``.

    A file that cannot be read is reported on its row and the rest of the class is still
    collected. Raises ``RosterError`` for an unreadable roster (before anything is written)
    and SystemExit for an unknown notebook."""
    course_root = Path(course_root)
    notebooks, grade_ids = course_notebooks(student)
    if notebook != "ALL" and notebook not in notebooks:
        raise SystemExit(f"collect: unknown notebook {notebook!r}; one of {', '.join(notebooks)} or ALL")
    roster = Roster(roster) if roster else None
    course_root.mkdir(parents=True, exist_ok=True)
    previous = {(r["student_id"], r["assignment"]): r for r in read_table(course_root / COLLECTED)
                if r["status"] == "collected"}
    rows, chosen = [], {}
    # Zip entries are copied here, on the course's disk (a tmpfs /tmp would hold them in memory).
    with tempfile.TemporaryDirectory(dir=course_root, prefix=".collect-") as tmp:
        everything = walk(source, tmp, limits)
        index_folders = {"/".join(f.folders) for f in everything if BRIGHTSPACE.match(f.name)}
        for found in everything:
            row = dict.fromkeys(FIELDS, "")
            row["file"] = found.path
            rows.append(row)
            try:
                _classify(found, row, notebook, notebooks, grade_ids, index_folders, roster, chosen)
            except Exception as e:  # one odd file never stops the class
                row.update(status="not matched",
                           notes=one_line(f"submitted, unreadable: {type(e).__name__}: {e}"))
        placed = {key: _choose(key, files, course_root, previous.get(key), rows)
                  for key, files in chosen.items()}

    scope = [notebook] if notebook != "ALL" else sorted({nb for _, nb in chosen})
    seen = {r["student_id"] for r in rows if r["status"] in ("collected", "duplicate", "skipped")
            and r["student_id"]}
    # Without a roster: everyone seen now or collected before (their rows are rewritten too).
    before = {p.parent.name for nb in scope for p in (course_root / "submitted").glob(f"*/{nb}")}
    students = roster.ids if roster else sorted(seen | before)
    for sid in students:
        for nb in scope:
            if placed.get((sid, nb)):
                continue
            if (course_root / "submitted" / sid / nb / f"{nb}.ipynb").is_file():
                earlier = dict(previous.get((sid, nb)) or dict.fromkeys(FIELDS, ""))
                earlier.update(student_id=sid, assignment=nb, status="collected", notes=one_line(
                    f"collected before; not in this download{'; ' if earlier['notes'] else ''}"
                    f"{earlier['notes']}"))
                rows.append(earlier)
                continue
            sent = [r for r in rows if r["student_id"] == sid and r["status"] == "not matched"
                    and r["assignment"] in (nb, "")]
            notes = (f"nothing readable: {sent[0]['file']} came but is not collected (see its line)"
                     if sent else "no submission")
            rows.append({**dict.fromkeys(FIELDS, ""), "student_id": sid, "assignment": nb,
                         "status": "missing", "notes": notes})
    save_table(rows, course_root / COLLECTED, scope)
    return rows


def _classify(found, row, notebook, notebooks, grade_ids, index_folders, roster, chosen):
    """Fill ``row`` for one file; a file to collect goes to ``chosen[(student, notebook)]``."""
    got = identify(found, notebooks, grade_ids, index_folders)
    if "ignored" in got:
        row.update(status="ignored", notes=got["ignored"])
        return
    if "skipped" in got:
        row.update(status="skipped", notes=got["skipped"])
        return
    row.update(assignment=got["notebook"], submitted_at=format_time(got["time"]),
               time_from=got["time_from"] if got["time"] is not None else "", late=got["late"])
    sid, why = _student(got, roster)
    row["student_id"] = sid
    why = got["why"] or why
    row["notes"] = "; ".join(got["notes"])
    if why:
        row.update(status="not matched", notes="; ".join(filter(None, [why, row["notes"]])))
    elif notebook != "ALL" and got["notebook"] != notebook:
        row.update(status="skipped", notes=f"for {got['notebook']}, not {notebook}")
    else:
        row.update(status="collected", sha256=sha256_of(found.read()))
        chosen.setdefault((sid, got["notebook"]), []).append(_Candidate(found, row, got, row["sha256"]))


def _choose(key, files, course_root, previous, rows):
    """Keep the newest of ``files`` (never older than what is already collected) and write it;
    True when a notebook for ``key`` is in submitted/ afterwards."""
    sid, nb = key
    files.sort(key=lambda c: (c.time if c.time is not None else float("-inf"), c.found.path))
    *older, kept = files
    ties = [c for c in older if c.time == kept.time and c.sha != kept.sha]
    for c in older:
        if c.sha == kept.sha:
            note = f"the same file as {kept.found.path}, which is kept"
        elif c in ties:
            note = f"the same time as {kept.found.path} (kept): check which one {sid} meant"
        else:
            note = f"older than {kept.found.path}: kept the newest"
        c.row.update(status="duplicate", notes="; ".join(filter(None, [c.row["notes"], note])))
    if ties:
        also = ", ".join(c.found.path for c in ties)
        note = f"{len(ties) + 1} files with the same time: kept {kept.found.path}, also {also}; check"
    else:
        note = f"newest of {len(files)} files" if older else ""
    folder = course_root / "submitted" / sid / nb
    there = _already_there(folder, nb, previous)
    shown = format_time
    if there and there[0] == kept.sha:
        note = "; ".join(filter(None, [note, "already collected (the same file)"]))
        if kept.lms_time and not (folder / TIMESTAMP).exists():
            _place(kept, folder, nb)
    elif there and there[1] is not None and kept.time is not None and kept.time <= there[1]:
        why = (f"older ({shown(kept.time)}) than the one already collected ({shown(there[1])})"
               if kept.time < there[1] else
               f"the same time ({shown(kept.time)}) as the one already collected, another file")
        kept.row.update(status="duplicate", notes="; ".join(filter(None, [
            kept.row["notes"], note, f"{why}: kept the newer one already collected; check"])))
        earlier = dict(previous) if previous and previous.get("sha256") == there[0] else {
            **dict.fromkeys(FIELDS, ""), "submitted_at": shown(there[1]), "sha256": there[0]}
        earlier.update(student_id=sid, assignment=nb, status="collected",
                       notes="collected before, newer than this download's")
        rows.append(earlier)
        return True
    else:
        if there:
            note = "; ".join(filter(None, [note, (
                f"replaced an older one collected before ({shown(there[1])})" if there[1] is not None
                else "replaced the one collected before (its time unknown)")]))
        try:
            _place(kept, folder, nb)
        except OSError as e:
            kept.row.update(status="not matched", notes=one_line(
                f"could not be written to {folder} ({e.strerror or e}): free some space and collect again"))
            return there is not None
    kept.row["notes"] = "; ".join(filter(None, [kept.row["notes"], note]))
    return True


def save_table(rows, path, scope):
    """Write ``rows`` to ``path`` (atomically), keeping earlier rows of notebooks outside ``scope``."""
    kept = [r for r in read_table(path) if r["assignment"] and r["assignment"] not in scope]
    write_atomic(path, csv_text(kept + rows, FIELDS))


def format_table(rows):
    """The table as text: file, student, notebook, status (and why); one line per row."""
    shown = [("file", "student", "notebook", "status")]
    for r in rows:
        status = r["status"] if not r["notes"] else f"{r['status']}: {r['notes']}"
        shown.append((r["file"] or "-", r["student_id"] or "-", r["assignment"] or "-", status))
    shown = [tuple(one_line(c) for c in row) for row in shown]
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
    parser.add_argument("--zip-limit", type=float, default=200, metavar="MB",
                        help="most a download's zips may expand to, in MB (default 200)")
    parser.add_argument("--course-root", type=Path, default=COURSE, help=argparse.SUPPRESS)
    parser.set_defaults(run=run)


def run(args):
    """Collect, print the table and a summary; 1 when a file was not placed, 2 for an
    unreadable roster or a write that failed (one line on stderr)."""
    try:
        return _run(args)
    except RosterError as e:
        print(f"collect: {e}", file=sys.stderr)
        raise
    except OSError as e:  # a full disk while writing the table or the roster: the old ones are whole
        print(f"collect: {one_line(e)}: nothing half-written was left; free some space or fix "
              "the permissions and collect again", file=sys.stderr)
        return 2


def _run(args):
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
        raise RosterError(f"roster {roster} does not exist: give the path of the CSV file")
    if roster:
        Roster(roster)  # a bad roster stops here, before anything is written
    if roster and (not saved.exists() or saved.read_bytes() != roster.read_bytes()):
        write_atomic(saved, roster.read_bytes())
        print(f"roster copied to {saved} (export reads it)")
    elif roster is None and saved.exists():
        roster = saved
    limits = Limits(total_mb=getattr(args, "zip_limit", 200))
    rows = collect(args.source, notebook, course_root, roster, limits=limits)
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
