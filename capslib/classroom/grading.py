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
import asyncio
import csv
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from capslib.classroom.paths import COURSE  # noqa: E402
from capslib.classroom.export import REPORT, submission_sha256  # noqa: E402

RUNS = "sandboxed"  # <course>/sandboxed/<student>/<notebook>/: each run, its verdict and logs

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


def _public_check_name(name):
    """What a student may take from ``capslib.checks``: the checks, not their references."""
    return name.startswith("check_") or name in ("CheckFailed", "*")


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
    watched = set(_WATCHED_MODULES)
    for node in ast.walk(tree):  # `import capslib.evidence as ev`: ev is watched too
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            watched |= {alias.asname or alias.name.split(".")[0] for alias in node.names
                        if isinstance(node, ast.Import) or (node.module or "").startswith(
                            ("capslib", "numpy", "keras"))}
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("capslib.") \
                    and node.module not in ("capslib.checks", "capslib.evidence"):
                found.append(f"imports {', '.join(a.name for a in node.names)} from {node.module} "
                             "(the course's own implementation)")
            if isinstance(node, ast.ImportFrom) and node.module == "capslib.checks":
                found += [f"imports {a.name} from capslib.checks (the checks' reference answers)"
                          for a in node.names if not _public_check_name(a.name)]
            if isinstance(node, ast.Import):
                found += [f"imports {a.name} (the course's own implementation)" for a in node.names
                          if a.name.startswith("capslib.")
                          and a.name not in ("capslib.checks", "capslib.evidence")]
        if isinstance(node, ast.Attribute) and _dotted(node.value) in ("checks", "capslib.checks") \
                and not _public_check_name(node.attr):
            found.append(f"uses {_dotted(node)} (the checks' reference answers)")
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in _WATCHED_MODULES:
            found.append(f"rebinds {node.name} (a name the check cells use)")
        if isinstance(node, ast.Assign):
            found += [f"rebinds {t.id} (a name the check cells use)" for t in node.targets
                      if isinstance(t, ast.Name) and t.id in _WATCHED_MODULES]
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        elif isinstance(node, ast.Delete):
            targets = node.targets
        for target in targets:
            name = _dotted(target) if isinstance(target, ast.Attribute) else None
            if name and name.split(".")[0] in watched:
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


def _course_config(course_root):
    """The course's nbgrader settings (``nbgrader_config.py``), loaded as nbgrader does."""
    from traitlets.config.loader import PyFileConfigLoader
    try:
        return PyFileConfigLoader("nbgrader_config.py", path=str(course_root)).load_config()
    except Exception as e:  # nbgrader would go on without them: we do not
        raise RuntimeError(f"{Path(course_root) / 'nbgrader_config.py'} failed to load: {e}") from None


def _api(course_root):
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory
    config = _course_config(course_root)
    config.CourseDirectory.root = str(course_root)
    coursedir = CourseDirectory(config=config)
    return NbGraderAPI(coursedir, config=config), config


def _sanitized(course_root, config, name, student):
    """The submission as nbgrader's autograde sees it before running it: its locked cells
    restored (a deleted check cell put back), outputs cleared: the course's own
    ``Autograde.sanitize_preprocessors``, so ``ApplySandboxRun`` finds the same cells."""
    import nbformat
    from nbgrader.apps.autogradeapp import Autograde
    path = Path(course_root) / "submitted" / student / name / f"{name}.ipynb"
    nb = nbformat.read(path, as_version=4)
    resources = {"nbgrader": {"notebook": name, "assignment": name, "student": student,
                              "db_url": f"sqlite:///{Path(course_root) / 'gradebook.db'}"}}
    for cls in Autograde(config=config).sanitize_preprocessors:
        nb, resources = cls(config=config).preprocess(nb, resources)
    return nb


def _verdict_path(course_root, student, name):
    return Path(course_root) / RUNS / student / name / "verdict.json"


def _last_verdict(course_root, student, name):
    try:
        return json.loads(_verdict_path(course_root, student, name).read_text())
    except (OSError, ValueError):
        return None


def _long_sources(teacher):
    from capslib.classroom import hooks
    return frozenset(hooks.long_cell_key(c) for c in teacher["cells"]
                     if hooks.LONG_TAG in c.get("metadata", {}).get("tags", []))


def _expected_seconds(course_root, name, student, teacher):
    """A guess of one run's time, to start the longest first: the last run's, or the
    assignment's long-running cells (they train models) counted as a minute each."""
    last = _last_verdict(course_root, student, name) or {}
    if isinstance(last.get("seconds"), (int, float)):
        return float(last["seconds"])
    return 10.0 + 60.0 * len(_long_sources(teacher))


async def _run_submissions(jobs, course_root, config, work, limits, unsafe, log):
    """Phase 1: every (assignment, student) of ``work`` in its own sandbox, ``jobs`` at
    a time, across assignments, so that a long notebook never leaves a job idle."""
    import nbformat
    from capslib.classroom import judge, runner
    slots = asyncio.Queue()
    for slot in range(jobs):
        slots.put_nowait(slot)
    done_count = [0]
    started = time.perf_counter()

    async def one(name, student, expected, long_sources):
        folder = Path(course_root) / RUNS / student / name
        folder.mkdir(parents=True, exist_ok=True)
        sha = submission_sha256(course_root, student, name) or ""
        slot = await slots.get()
        try:
            try:
                nb = _sanitized(course_root, config, name, student)
            except Exception as e:  # unreadable JSON, a cell nbgrader cannot read
                _write_json(folder / "verdict.json",
                            {"error": f"nbgrader could not read it ({type(e).__name__}: "
                                      f"{str(e)[:300]})", "submitted_sha256": sha})
                return
            nb, info = await runner.run_submission(nb, limits, slot=slot, unsafe=unsafe,
                                                   long_sources=long_sources)
        finally:
            slots.put_nowait(slot)
            done_count[0] += 1
        judged = {}
        for cell in nb.cells:
            gid = _meta(cell).get("grade_id")
            if _meta(cell).get("grade") and cell.cell_type == "code":
                judged[gid] = judge.judge(gid, cell.get("outputs"), expected[gid]) if gid in expected \
                    else (False, "no expected answers for this check")
        (folder / "kernel.log").write_text(info.pop("kernel_log", ""))
        nbformat.write(nb, folder / f"{name}.ipynb")
        _write_json(folder / "verdict.json", {**info, "judged": judged, "submitted_sha256": sha,
                                              "unsafe": unsafe})
        elapsed = time.perf_counter() - started
        left = (len(work) - done_count[0]) * elapsed / done_count[0]
        log(f"  {name}: {student} run in {info['seconds']:.0f} s ({done_count[0]}/{len(work)}, "
            f"about {left / 60:.0f} min left)")

    await asyncio.gather(*(one(*item) for item in work))


def _write_json(path, data):
    tmp = Path(path).with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def grade(names, course_root=COURSE, timeout=None, log=print, jobs=None, students=None,
          force=False, unsafe=False, limits=None):
    """Autograde each assignment in ``names`` for the collected students.

    Each notebook runs in its own sandbox (``sandbox.py``), ``jobs`` at a time (default:
    the machine's cores); the grade of each check cell is decided outside it
    (``judge.py``); nbgrader then writes the gradebook from those runs, in this process
    alone. Only submissions that changed since they were last graded are run again,
    unless ``force``; ``students`` limits it to some. Without a sandbox on this machine it
    raises ``sandbox.SandboxUnavailable``, unless ``unsafe`` (then every report says so).

    Returns the report rows (dicts) also written to ``<course>/grading-report.csv``.
    """
    from capslib.classroom import hooks, judge, sandbox
    course_root = Path(course_root).resolve()
    if not unsafe:
        reason = sandbox.check_available()
        if reason:
            raise sandbox.SandboxUnavailable(
                f"{reason}. Students' code is graded only in a sandbox; to run it with your "
                "rights in this folder anyway, give --unsafe-no-sandbox (every report will say so)")
    import warnings
    warnings.filterwarnings("ignore", module="nbgrader")  # SQLAlchemy's notes on nbgrader's sessions
    limits = limits or sandbox.Limits()
    limits.cell_seconds = int(timeout) if timeout is not None else hooks.default_timeout()
    jobs = max(1, int(jobs or os.cpu_count() or 1))
    api, config = _api(course_root)
    plan, work = [], []
    for name in names:
        everyone = _students(course_root, name)
        chosen = [s for s in everyone if not students or s in students]
        if not chosen:
            log(f"{name}: no submissions collected" + (f" for {', '.join(students)}" if students else
                                                       " (run `capsnet-classroom collect` first)"))
            continue
        teacher = _read(_teacher_notebook(course_root, name))
        expected = judge.expected_answers(teacher)
        todo = [s for s in chosen if force or _needs_grading(course_root, s, name)]
        plan.append((name, chosen, todo))
        long_sources = _long_sources(teacher)
        work += [(_expected_seconds(course_root, name, s, teacher), name, s, expected, long_sources)
                 for s in todo]
    unchanged = sum(len(chosen) - len(todo) for _, chosen, todo in plan)
    if work:
        log(f"running {len(work)} notebooks in sandboxes, {jobs} at a time, the longest first"
            + (f" ({unchanged} unchanged since graded)" if unchanged else ""))
        work.sort(key=lambda item: -item[0])  # stable: assignments, then students, in order
        asyncio.run(_run_submissions(jobs, course_root, config, [item[1:] for item in work],
                                     limits, unsafe, log))
    rows = []
    for name, chosen, todo in plan:
        start = time.perf_counter()
        for student in todo:  # phase 2: the gradebook, written by this process alone
            verdict = _last_verdict(course_root, student, name) or {}
            if verdict.get("error"):
                continue
            result = api.autograde(name, student, force=True, create=True)
            log_path = Path(course_root) / RUNS / student / name / "nbgrader.log"
            log_path.write_text((result.get("log") or "") + (result.get("error") or ""))
            if not result.get("success"):
                verdict["error"] = "nbgrader could not grade it: see " + str(log_path)
                _write_json(_verdict_path(course_root, student, name), verdict)
        scores = _scores(course_root, name)
        released = _read(course_root / "release" / name / f"{name}.ipynb")
        for student in chosen:
            try:
                rows.append(_report_row(course_root, name, student, released, scores))
            except Exception as e:  # a notebook nbgrader graded but we cannot read (nbformat 3)
                rows.append({"student_id": student, "assignment": name, "status": "not graded",
                             "score": "", "max_score": "", "seconds": "0",
                             "notes": f"NOT GRADED: its report could not be made "
                                      f"({type(e).__name__}: {str(e)[:200]})"})
        not_graded = [r["student_id"] for r in rows if r["assignment"] == name and r["status"] != "graded"]
        log(f"{name}: graded {len(chosen) - len(not_graded)} of {len(chosen)} students "
            f"({len(todo)} run, {len(chosen) - len(todo)} unchanged; gradebook written in "
            f"{time.perf_counter() - start:.0f} s)"
            + (f"; NOT graded: {', '.join(not_graded)}" if not_graded else ""))
    _write_report(course_root, rows)
    return rows


def _teacher_notebook(course_root, name):
    """The teacher's executed notebook: the course root's staged source, else notebooks/."""
    from capslib.classroom.paths import NOTEBOOKS
    staged = Path(course_root) / "source" / name / f"{name}.ipynb"
    return staged if staged.is_file() else NOTEBOOKS / f"{name}.ipynb"


def _needs_grading(course_root, student, name):
    verdict = _last_verdict(course_root, student, name)
    graded = Path(course_root) / "autograded" / student / name / f"{name}.ipynb"
    return (verdict is None or verdict.get("error") or not graded.exists()
            or verdict.get("submitted_sha256") != (submission_sha256(course_root, student, name) or ""))


def _report_row(course_root, name, student, released, scores):
    verdict = _last_verdict(course_root, student, name) or {}
    submitted = _read(Path(course_root) / "submitted" / student / name / f"{name}.ipynb") \
        if not verdict.get("error", "").startswith("nbgrader could not read") else {"cells": []}
    changes = locked_cell_changes(submitted, released) if submitted["cells"] else []
    tampering = submission_tampering(submitted, released) if submitted["cells"] else []
    score, max_score = scores.get(student, (None, None))
    notes = []
    error = verdict.get("error")
    if error:
        notes.append(f"NOT GRADED: {error}")
    if verdict.get("unsafe"):
        notes.append("NOT SANDBOXED: graded with --unsafe-no-sandbox")
    if verdict.get("notebook_time_limit"):
        notes.append(f"stopped at the notebook's time limit ({verdict['notebook_time_limit']} s)")
    died = verdict.get("died")
    if died:
        cause = ("the memory limit was reached" if verdict.get("memory_limit_hit") else
                 "a cell ignored its time limit" if verdict.get("killed_after_limit") else
                 "the student's code ended it")
        notes.append(f"the kernel died in {died} ({cause}): later cells did not run")
    elif verdict.get("memory_limit_hit"):
        notes.append("the memory limit was reached")
    notes += [f"stopped after the time limit in {where}" for where in verdict.get("timeouts", [])]
    notes += [f"output cut in {where} (over the limit)" for where in verdict.get("cut", [])]
    if verdict.get("leftovers"):
        notes.append("processes still running at the end (killed): " + ", ".join(verdict["leftovers"]))
    notes += verdict.get("attempts", [])
    notes += [f"locked cell {gid} {what} (restored before grading)" for gid, what in changes]
    notes += [f"possible tampering in {where}: {what}" for where, what in tampering]
    return {
        "student_id": student, "assignment": name,
        "status": "not graded" if error or score is None else "graded",
        "score": "" if error or score is None else f"{score:g}",
        "max_score": "" if max_score is None else f"{max_score:g}",
        "seconds": f"{verdict.get('seconds', 0):.0f}",
        "timeouts": len(verdict.get("timeouts", [])), "changed_locked_cells": len(changes),
        "tampering": len(tampering), "attempts": len(verdict.get("attempts", [])),
        "peak_memory_mb": verdict.get("peak_memory_mb", ""),
        "sandbox": verdict.get("sandbox", ""),
        "log": str(Path(course_root) / RUNS / student / name),
        "submitted_sha256": verdict.get("submitted_sha256", ""),
        "notes": "; ".join(notes),
    }


def _write_report(course_root, rows):
    """The report, merged with the rows of students and notebooks not graded this time;
    written to a temporary file and renamed (a full disk never leaves half a report)."""
    path = Path(course_root) / REPORT
    new = {(row["student_id"], row["assignment"]) for row in rows}
    old = []
    if path.exists():
        with open(path, newline="") as f:
            old = [row for row in csv.DictReader(f)
                   if (row.get("student_id"), row.get("assignment")) not in new]
    fields = ["student_id", "assignment", "status", "score", "max_score", "seconds", "timeouts",
              "changed_locked_cells", "tampering", "attempts", "peak_memory_mb", "sandbox", "log",
              "submitted_sha256", "notes"]
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval="", extrasaction="ignore")
        writer.writeheader()
        for row in sorted(old + rows, key=lambda r: (r["assignment"], r["student_id"])):
            writer.writerow(row)
    os.replace(tmp, path)
    return path


def print_report(rows, out=print):
    """The report as a table a teacher reads at a glance."""
    out(f"{'student':16} {'notebook':24} {'score':>10} {'seconds':>7}  notes")
    for row in rows:
        score = f"{row['score']}/{row['max_score']}" if row["score"] != "" else row["status"]
        out(f"{row['student_id']:16} {row['assignment']:24} {score:>10} {row['seconds']:>7}  "
            f"{row['notes'] or '-'}")


def feedback(names, course_root=COURSE, log=print):
    """Feedback pages, one student at a time (one unreadable notebook never stops the
    others), built by nbgrader in this process from the autograded notebooks with the
    course's ``HideHiddenTests``; a page that still shows a hidden-test line is deleted and
    named (the others are kept)."""
    from nbformat import from_dict

    from capslib.classroom import hooks
    course_root = Path(course_root).resolve()
    api, _ = _api(course_root)
    pages = []
    for name in names:
        teacher = from_dict(_read(_teacher_notebook(course_root, name)))
        hidden = {line for line in hooks.hidden_lines(teacher) if len(line) > 20}
        for student in sorted(p.parent.name for p in (course_root / "autograded").glob(f"*/{name}")):
            result = api.generate_feedback(name, student, force=True)
            if not result.get("success"):
                why = (result.get("error") or result.get("log") or "?").strip().splitlines()[-1:]
                log(f"{name}: no feedback page for {student}: {why[0] if why else '?'}")
                continue
            for page in sorted((course_root / "feedback" / student / name).glob("*.html")):
                text = page.read_text(errors="replace")
                if any(line in text for line in hidden):
                    page.unlink()  # never left where it could be sent
                    log(f"{name}: no feedback page for {student}: it showed a hidden-test line "
                        "(deleted; look at the graded notebook)")
                    continue
                pages.append(page)
    return pages
