"""How long sandboxed grading takes for a made-up class, with 1 and more jobs.

    python -m capslib.classroom.benchmark --students 30 --jobs 1 2 [--notebooks 02_primary_capsules 04_margin_loss]

Builds a throwaway course root (nbgrader's generate_assignment), hands in one notebook per
student and notebook (two of three honest, the others with a typical mistake, and one runaway
loop per notebook), then grades the whole class once per ``--jobs`` value from scratch and
prints the seconds, the per-notebook median and the speed-up. Runs under
``CAPSLIB_PROFILE=quick`` unless another profile is set. Prints figures; asserts nothing.
"""
import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

MISTAKES = {
    "ex2_2_squash": "def squash(s, axis=-1, epsilon=1e-7):\n    return s",
    "ex4_2_margin_loss": ("def margin_loss(targets, lengths, m_plus=0.9, m_minus=0.1, lambda_=0.5):\n"
                          "    return ops.sum(targets * ops.square(ops.relu(m_plus - lengths)), axis=-1)"),
}
RUNAWAY = {
    "ex2_1_count_primary_capsules": "def count_primary_capsules(height, width):\n    while True:\n        pass",
    "ex4_1_capsule_lengths": "def capsule_lengths(poses, epsilon=1e-7):\n    while True:\n        pass",
}


def build_class(course, names, students):
    from capslib.classroom import cli as classroom
    from capslib.classroom.grading import nbgrader
    shutil.copy(classroom.COURSE / "nbgrader_config.py", course)
    for name in names:
        source = course / "source" / name
        source.mkdir(parents=True)
        shutil.copy(classroom.NOTEBOOKS / f"{name}.ipynb", source)
        nbgrader("generate_assignment", name, "--force", "--log-level=WARN", course_root=course)
        released = classroom.read(course / "release" / name / f"{name}.ipynb")
        teacher = classroom.read(classroom.NOTEBOOKS / f"{name}.ipynb")
        ids = {c.get("metadata", {}).get("nbgrader", {}).get("grade_id") for c in released["cells"]}
        for k in range(students):
            answers = None
            if k == students - 1:
                answers = {g: a for g, a in RUNAWAY.items() if g in ids}
            elif k % 3 == 2:
                answers = {g: a for g, a in MISTAKES.items() if g in ids}
            folder = course / "submitted" / f"student{k:02d}" / name
            folder.mkdir(parents=True)
            (folder / f"{name}.ipynb").write_text(json.dumps(classroom.solve(released, teacher, answers)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=30)
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--notebooks", nargs="+", default=["02_primary_capsules", "04_margin_loss"])
    args = parser.parse_args(argv)
    os.environ.setdefault("CAPSLIB_PROFILE", "quick")
    from capslib.classroom import grading, sandbox
    print(f"sandbox: {sandbox.check_available() or 'bubblewrap'}; limits: {sandbox.Limits().describe()}")
    results = {}
    for jobs in args.jobs:
        with tempfile.TemporaryDirectory(prefix="capsnet-bench-") as tmp:
            course = Path(tmp) / "course"
            course.mkdir()
            build_class(course, args.notebooks, args.students)
            start = time.perf_counter()
            rows = grading.grade(args.notebooks, course_root=course, jobs=jobs, log=lambda *_: None)
            seconds = time.perf_counter() - start
        per = {n: statistics.median(float(r["seconds"]) for r in rows if r["assignment"] == n)
               for n in args.notebooks}
        graded = sum(r["status"] == "graded" for r in rows)
        results[jobs] = seconds
        print(f"{args.students} students x {len(args.notebooks)} notebooks, --jobs {jobs}: "
              f"{seconds:.0f} s ({seconds / 60:.1f} min), {graded}/{len(rows)} graded; median per "
              "notebook: " + ", ".join(f"{n} {s:.0f} s" for n, s in per.items()), flush=True)
    first = args.jobs[0]
    for jobs in args.jobs[1:]:
        print(f"speed-up of --jobs {jobs} over --jobs {first}: {results[first] / results[jobs]:.2f}x")


if __name__ == "__main__":
    main()
