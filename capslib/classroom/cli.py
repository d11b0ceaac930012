"""Teacher's tools for the classroom edition (nbgrader underneath).

    capsnet-classroom student          # notebooks/ -> student/ (what `make student` runs)
    capsnet-classroom check            # student/ is what notebooks/ generates, byte for byte
    capsnet-classroom solve NB OUT     # a student copy with the reference answers filled in
    capsnet-classroom time             # run each solved student copy, print seconds
    capsnet-classroom execute NB...    # re-execute teacher notebooks in place (stored outputs)

The course root is ``classroom/`` (its ``nbgrader_config.py``); each notebook
is one nbgrader assignment named after it (``02_primary_capsules``, ...).
"""
import argparse
import copy
import filecmp
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from capslib.classroom.paths import COURSE, NOTEBOOKS, ROOT, STUDENT
SOLUTION_MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION")
# What a course root needs: the settings and the hooks they import.
COURSE_FILES = ("nbgrader_config.py",)


def assignments(notebooks=NOTEBOOKS):
    """Assignment ids: one per notebook, in course order."""
    return [p.stem for p in sorted(Path(notebooks).glob("[0-9][0-9]_*.ipynb"))]


def nbgrader(*args, course_root=COURSE):
    """Run an nbgrader command in the course root; raise with its log if it fails."""
    from capslib.classroom import grading
    return grading.nbgrader(*args, course_root=course_root)


def generate_student_copies(out=STUDENT, course_root=COURSE, notebooks=NOTEBOOKS):
    """Stage notebooks/ as nbgrader sources, generate the assignments, copy them to ``out``."""
    course_root, out = Path(course_root), Path(out)
    if course_root.resolve() != COURSE.resolve():
        course_root.mkdir(parents=True, exist_ok=True)
        for name in COURSE_FILES:
            shutil.copy(COURSE / name, course_root / name)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in assignments(notebooks):
        source = course_root / "source" / name
        shutil.rmtree(source, ignore_errors=True)
        source.mkdir(parents=True)
        shutil.copy(Path(notebooks) / f"{name}.ipynb", source / f"{name}.ipynb")
        nbgrader("generate_assignment", name, "--force", "--log-level=WARN",
                 course_root=course_root)
        released = read(course_root / "release" / name / f"{name}.ipynb")
        for cell in released["cells"]:
            cell.get("metadata", {}).pop("execution", None)  # the teacher's run timestamps
        write(released, out / f"{name}.ipynb")
        written.append(out / f"{name}.ipynb")
    return written


def strip_solution_markers(source):
    """The teacher's solution region as a student would write it: markers removed."""
    lines = source.splitlines(keepends=True)
    kept = [line for line in lines if line.strip() not in SOLUTION_MARKERS]
    return "".join(kept).rstrip("\n")


def _grade_id(cell):
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")


def solve(student_nb, teacher_nb, answers=None):
    """A copy of a student notebook with every solution cell filled in.

    ``answers`` maps grade ids to source that replaces the reference answer
    (to build submissions with mistakes); all other solution cells get the
    teacher's answer.
    """
    solved = copy.deepcopy(student_nb)
    reference = {_grade_id(c): c for c in teacher_nb["cells"] if _grade_id(c)}
    for cell in solved["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if not meta.get("solution"):
            continue
        gid = meta["grade_id"]
        if answers and gid in answers:
            cell["source"] = answers[gid]
        else:
            cell["source"] = strip_solution_markers("".join(reference[gid]["source"]))
    return solved


def read(path):
    return json.loads(Path(path).read_text())


def write(nb, path):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n")


def check(student=STUDENT):
    """Regenerate into a temporary folder and compare with ``student`` byte for byte."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate_student_copies(Path(tmp) / "student", Path(tmp) / "course")
        names = sorted(p.name for p in fresh)
        committed = sorted(p.name for p in Path(student).glob("*.ipynb"))
        differ = [n for n in names if not (Path(student) / n).exists()
                  or not filecmp.cmp(Path(tmp) / "student" / n, Path(student) / n, shallow=False)]
        extra = sorted(set(committed) - set(names))
    return differ, extra


def time_solved(names=None, timeout=900):
    """Run each solved student copy top to bottom in a fresh folder; seconds per notebook."""
    import nbformat
    from nbclient import NotebookClient

    times = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "student"  # ../runs then stays inside tmp
        folder.mkdir()
        for name in names or assignments():
            nb = solve(read(STUDENT / f"{name}.ipynb"), read(NOTEBOOKS / f"{name}.ipynb"))
            client = NotebookClient(nbformat.reads(json.dumps(nb), as_version=4), timeout=timeout, kernel_name="python3",
                                    resources={"metadata": {"path": str(folder)}})
            start = time.perf_counter()
            client.execute()
            times[name] = time.perf_counter() - start
            print(f"{name:28} {times[name]:6.1f} s", flush=True)
    return times


# TensorFlow's C++ start-up notices (printed before TF_CPP_MIN_LOG_LEVEL applies): not
# part of the lesson, so they are not stored in the committed notebooks.
STARTUP_NOTICES = ("WARNING: All log messages before absl::InitializeLog()", "I0000 ",
                   "To enable the following instructions", "E0000 ", "W0000 ")


def drop_startup_notices(nb):
    """Remove TensorFlow's start-up notices from the stderr outputs of ``nb`` (in place)."""
    for cell in nb["cells"]:
        kept = []
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                text = out["text"] if isinstance(out["text"], str) else "".join(out["text"])
                lines = [line for line in text.splitlines(keepends=True)
                         if line.strip() and not line.startswith(STARTUP_NOTICES)]
                if not lines:
                    continue
                out["text"] = lines
            kept.append(out)
        if cell["cell_type"] == "code":
            cell["outputs"] = kept
    return nb


def tidy_outputs(nb):
    """``nb`` (nbformat) as committed: streams merged and progress bars' carriage
    returns applied, as `jupyter nbconvert --execute` stores them; no start-up notices."""
    import nbformat
    from nbconvert.preprocessors.coalescestreams import CoalesceStreamsPreprocessor

    nb, _ = CoalesceStreamsPreprocessor().preprocess(nb, {})
    return drop_startup_notices(json.loads(nbformat.writes(nb)))


def execute(names, timeout=None):
    """Run teacher notebooks top to bottom in place (in notebooks/, the default
    profile), as committed: outputs, execution counts, widget state; no start-up notices."""
    import nbformat
    from nbclient import NotebookClient

    for name in names:
        path = NOTEBOOKS / f"{Path(name).stem}.ipynb"
        nb = nbformat.read(path, as_version=4)
        start = time.perf_counter()
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
        write(tidy_outputs(nb), path)
        print(f"{path.name:32} executed in {time.perf_counter() - start:6.1f} s", flush=True)


def _use_course(argv):
    """``--course DIR`` (anywhere on the command line): the folders are resolved when the
    tools are imported, so the command starts again with $CAPSNET_COURSE set."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--course", type=Path)
    known, rest = pre.parse_known_args(argv)
    if known.course is None:
        return
    os.environ["CAPSNET_COURSE"] = str(known.course.expanduser().resolve())
    os.execv(sys.executable, [sys.executable, "-m", "capslib.classroom", *rest])


def main(argv=None):
    if argv is None:
        _use_course(sys.argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--course", type=Path, metavar="DIR",
                        help="the course folder (holding notebooks/ and classroom/); default: "
                             "this folder or one above it, or $CAPSNET_COURSE")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("student", help="generate the student copies (make student)")
    p.add_argument("--out", type=Path, default=STUDENT)
    p.add_argument("--course-root", type=Path, default=COURSE)
    sub.add_parser("check", help="is student/ up to date with notebooks/?")
    p = sub.add_parser("solve", help="fill a student copy with the reference answers")
    p.add_argument("notebook", help="assignment id, e.g. 02_primary_capsules")
    p.add_argument("out", type=Path)
    p = sub.add_parser("time", help="time each solved student copy")
    p.add_argument("names", nargs="*")
    p = sub.add_parser("execute", help="re-execute teacher notebooks in place (after editing them)")
    p.add_argument("names", nargs="+", help="notebooks, e.g. 07_interpretation")
    # -- grading (grading.py) --
    p = sub.add_parser("grade", help="autograde collected submissions; report per student")
    p.add_argument("names", nargs="*", help="notebooks (default: all)")
    p.add_argument("--timeout", type=int, default=None,
                   help="seconds a cell may run (default 60, or $CAPSLIB_GRADE_TIMEOUT)")
    p.add_argument("--jobs", type=int, default=None,
                   help="notebooks run at once, each in its own sandbox (default: the cores)")
    p.add_argument("--student", action="append", default=None, metavar="ID",
                   help="grade only this student (repeat for more)")
    p.add_argument("--force", action="store_true",
                   help="grade again submissions that did not change since they were graded")
    p.add_argument("--memory-mb", type=int, default=6144, help="memory of a sandbox (default 6144)")
    p.add_argument("--cpu-seconds", type=int, default=1800,
                   help="CPU time of a notebook's kernel (default 1800)")
    p.add_argument("--tasks", type=int, default=256,
                   help="processes and threads in a sandbox (default 256)")
    p.add_argument("--output-kb", type=int, default=1000, help="output kept per cell (default 1000)")
    p.add_argument("--notebook-seconds", type=int, default=1800,
                   help="wall clock for a whole notebook (default 1800)")
    p.add_argument("--unsafe-no-sandbox", action="store_true",
                   help="run students' code WITHOUT a sandbox, with your rights (every report says so)")
    p = sub.add_parser("feedback", help="feedback pages without hidden tests")
    p.add_argument("names", nargs="*", help="notebooks (default: all)")
    p = sub.add_parser("export", help="grades.csv: every roster student, 'missing' if nothing came")
    p.add_argument("names", nargs="*", help="notebooks (default: all)")
    p.add_argument("--out", type=Path, default=None)
    # -- hand-out and collection: options and code in handout.py, collect.py --
    from capslib.classroom import collect, handout
    for module_name, module in (("handout", handout), ("collect", collect)):
        module.add_arguments(sub.add_parser(module_name, help=module.HELP, description=module.__doc__,
                                            formatter_class=argparse.RawDescriptionHelpFormatter))
    # -- end of hand-out and collection --
    args = parser.parse_args(argv)
    from capslib.classroom.paths import CourseNotFound, require_root
    try:
        require_root()
    except CourseNotFound as e:
        print(f"capsnet-classroom: {e}", file=sys.stderr)
        return 2
    if getattr(args, "run", None):  # handout, collect
        return args.run(args)

    if args.command == "student":
        for path in generate_student_copies(args.out, args.course_root):
            print("wrote", path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
    elif args.command == "check":
        differ, extra = check()
        if differ or extra:
            print("student/ is out of date; run `make student`. Differ:", differ, "Extra:", extra)
            return 1
        print(f"student/ matches notebooks/ ({len(assignments())} notebooks)")
    elif args.command == "execute":
        execute(args.names)
    elif args.command == "solve":
        write(solve(read(STUDENT / f"{args.notebook}.ipynb"),
                    read(NOTEBOOKS / f"{args.notebook}.ipynb")), args.out)
    elif args.command in ("grade", "feedback", "export"):
        from capslib.classroom import grading
        names = args.names or assignments()
        if args.command == "grade":
            from capslib.classroom.sandbox import Limits, SandboxUnavailable
            for flag in ("timeout", "jobs", "memory_mb", "cpu_seconds", "tasks", "output_kb",
                         "notebook_seconds"):
                value = getattr(args, flag)
                if value is not None and value <= 0:
                    parser.error(f"--{flag.replace('_', '-')} {value}: give a positive number")
            limits = Limits(memory_mb=args.memory_mb, cpu_seconds=args.cpu_seconds, tasks=args.tasks,
                            output_bytes=args.output_kb * 1000, notebook_seconds=args.notebook_seconds)
            try:
                rows = grading.grade(names, timeout=args.timeout, jobs=args.jobs, students=args.student,
                                     force=args.force, unsafe=args.unsafe_no_sandbox, limits=limits)
            except SandboxUnavailable as e:
                print(f"grade: {e}", file=sys.stderr)
                return 2
            grading.print_report(rows)
            return 1 if any(row["status"] != "graded" for row in rows) else 0
        if args.command == "feedback":
            pages = grading.feedback(names)
            print(f"{len(pages)} feedback pages in {COURSE / 'feedback'} (no hidden tests)")
        else:
            from capslib.classroom import export
            out, rows = export.export(names, out=args.out)
            missing = sum(row["status"] == "missing" for row in rows)
            print(f"wrote {out}: {len(rows)} rows, {missing} missing")
    elif args.command == "time":
        times = time_solved(args.names or None)
        print(f"{'slowest':28} {max(times.values()):6.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
