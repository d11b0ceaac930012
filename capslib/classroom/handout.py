"""The student hand-out: one folder and one zip that hold no answers.

    make handout                                     # = capsnet-classroom handout
    capsnet-classroom handout --out DIR    # another folder than build/handout
    capsnet-classroom handout --git        # also a git repository of the hand-out alone

It writes ``build/handout/capsnet-student/`` and ``build/handout/capsnet-student.zip``
(the zip holds the folder). The bundle holds::

    notebooks/        the student copies: student/*.ipynb, as nbgrader made them
    capslib/          the library the notebooks import (installed in editable mode,
                      so that it finds data/ and results/ beside it)
    data/             Fashion-MNIST (and a shipped model folder when the repository has one)
    results/          the measured runs notebooks 06, 07 and 08 read
    pyproject.toml, constraints.txt
    README.md         for students: how to start (``make lab``) and how to hand in
    Makefile          ``make lab``: a virtual environment, the install, JupyterLab on notebooks/
    environment.yml   the conda alternative
    jupyter/          Jupyter settings read through JUPYTER_CONFIG_PATH: nbgrader's menus off
    .gitignore

and nothing else: no teacher's notebook, TEACHING.md, scripts/, classroom/ or tests/. The
students' install has no nbgrader (``.[notebooks]``, not the ``classroom`` extra), and
``jupyter/`` turns nbgrader's server and JupyterLab extensions off in case one is installed
anyway, so their JupyterLab shows no Create Assignment, Formgrader or course list.

Files are taken from what a clean checkout holds (``git ls-files``: tracked files and new
files git does not ignore), so nothing ignored (``runs/``, ``.venv``, a gradebook) gets in.
The build stops, and removes what it wrote, if any file of the bundle holds a solution or a
hidden-test marker.

``--git`` commits the bundle folder on ``main`` of a git repository of its own (made by the
first such build; later builds keep its history and add a commit when something changed, so
pushes are plain updates; the zip leaves ``.git`` out). Push it with

    capsnet-classroom handout --push <students' repository URL>
    capsnet-classroom handout --push "$PWD" --branch student    # a student-only branch here

which first checks that ``git -C build/handout/capsnet-student`` is the hand-out's own
repository (``rev-parse --show-toplevel`` is the folder itself), committed and whole: a bare
``git -C DIR push`` in a folder without its own ``.git`` would push the repository above it,
the teacher's, answers included. (The student-only branch has no common history with the
teacher's: ``git push origin student`` publishes it.)

A build never loses or leaks: the bundle, its ``.git`` included, is built in a hidden folder
beside the target and exchanged with the previous hand-out in one rename, the old one removed
after (``capslib.swap``): a build killed at any moment (SIGTERM, SIGKILL) leaves the previous
hand-out, or the new one, whole, with its own ``.git``. The folder records what it holds in
``.capsnet-handout.json`` (not zipped, not committed); a folder there that is not a previous
hand-out (no such record, files the build did not make, files changed since) is not replaced
without ``--force`` (one line, exit 2).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from capslib.classroom.paths import ROOT  # noqa: E402

DEFAULT_OUT = ROOT / "build" / "handout"
NAME = "capsnet-student"
HELP = "build the student hand-out, a folder and a zip (make handout)"

# Repository path -> path in the bundle (folders are copied whole, from the file list).
COPIED = {"capslib": "capslib", "data": "data", "results": "results", "student": "notebooks",
          "pyproject.toml": "pyproject.toml", "constraints.txt": "constraints.txt"}
NOTEBOOK_FOLDER = COPIED["student"]
FORBIDDEN_MARKERS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")
SKIPPED_PARTS = {"__pycache__", ".ipynb_checkpoints", ".DS_Store"}
STORED_SUFFIXES = {".gz", ".zip", ".npz", ".png", ".keras", ".h5"}  # already compressed

# What nbgrader registers in Jupyter (``jupyter server extension list``,
# ``jupyter labextension list``): all off in the students' JupyterLab.
NBGRADER_SERVER_EXTENSIONS = ("nbgrader.server_extensions.formgrader",
                              "nbgrader.server_extensions.validate_assignment",
                              "nbgrader.server_extensions.assignment_list",
                              "nbgrader.server_extensions.course_list")
NBGRADER_LAB_EXTENSIONS = ("@jupyter/nbgrader",)

STUDENT_MAKEFILE = """\
# The Capsule Networks course, students' edition: `make lab` is all you need.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Jupyter also reads jupyter/: it turns the teacher's tools (nbgrader) off.
export JUPYTER_CONFIG_PATH := $(CURDIR)/jupyter
# Jupyter refuses root unless told (containers, Colab-like machines run as root).
LAB_ARGS ?= $(if $(filter 0,$(shell id -u)),--allow-root)

.PHONY: lab install open clean

# Create .venv if missing, install, open JupyterLab on notebooks/.
lab: $(STAMP)
\t$(MAKE) --no-print-directory open

install: $(STAMP)

# Re-run only when the dependency spec changes; the stamp makes it a no-op.
$(STAMP): pyproject.toml constraints.txt
\t@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || \\
\t  { echo "The course needs Python 3.10 or newer; $(PYTHON) is older (try make PYTHON=python3.12)."; exit 1; }
\ttest -x $(PY) || $(PYTHON) -m venv $(VENV)
\t$(PY) -m pip install -q --upgrade pip
\t$(PY) -m pip install -q -c constraints.txt -e ".[notebooks]"
\ttouch $@

# JupyterLab on the environment as it is (make lab checks the install first).
open:
\t$(VENV)/bin/jupyter lab $(LAB_ARGS) --ServerApp.root_dir="$(CURDIR)" \\
\t  --LabApp.default_url=/lab/tree/{notebooks}

clean:
\trm -rf $(VENV) runs *.egg-info
""".replace("{notebooks}", NOTEBOOK_FOLDER)

STUDENT_ENVIRONMENT = """\
# Conda alternative to `make lab`: conda env create -f environment.yml
name: capsnet-student
channels:
  - conda-forge
dependencies:
  - python>=3.10
  - pip
  - pip:
      - -e .[notebooks]
"""

STUDENT_GITIGNORE = """\
.venv/
runs/
__pycache__/
*.egg-info/
.ipynb_checkpoints/
"""

STUDENT_README = """\
# Capsule Networks, step by step

Eight Jupyter notebooks build a Capsule Network (Sabour, Frosst & Hinton 2017, *Dynamic Routing
Between Capsules*) piece by piece and train it on Fashion-MNIST. Each notebook has two exercises,
checked as you go, and three questions to discuss.

## Start

You need Python 3.10 or newer and `make` (Linux or macOS; on Windows, see below). In this folder:

```sh
make lab
```

The first time, it creates a virtual environment in `.venv/` and installs the course into it (a
few minutes: TensorFlow and JupyterLab are large downloads); then it opens JupyterLab on
`{notebooks}/`. Later, `make lab` starts at once. The data ships in `data/`: nothing else is
downloaded.

Without `make` (Windows, or by hand), from this folder:

```sh
python -m venv .venv
.venv/bin/pip install -c constraints.txt -e ".[notebooks]"     # Windows: .venv\\Scripts\\pip ...
.venv/bin/jupyter lab                                          # Windows: .venv\\Scripts\\jupyter lab
```

With conda: `conda env create -f environment.yml`, `conda activate capsnet-student`, `jupyter lab`.

## The notebooks

| notebook | |
| --- | --- |
{table}

Work through them in order. Notebooks 06 and 07 train a small model in class (under 10 minutes on
a laptop); `CAPSLIB_PROFILE=lesson make lab` trains on all 55,000 images (about an hour on 2
CPU cores: homework). Interrupt training at any time: running the cell again goes on where it stopped. Your
runs are saved in `runs/`.

## Exercises

Write your answer in the cells that say `# YOUR CODE HERE` (delete the
`raise NotImplementedError()` line) or `YOUR ANSWER HERE`. The cell after each exercise checks
it: it prints one line per case that passes, and on a mistake it stops with a message that names
it. Do not edit or delete the check cells: they are put back as they were, with more tests, when
your notebook is graded.

## Hand in

Each notebook is one assignment, named after its file (for example `02_primary_capsules`).

1. In JupyterLab: *Kernel > Restart Kernel and Run All Cells*, and check that it runs to the end.
2. Save (Ctrl-S or Cmd-S).
3. Upload the notebook file itself, `{notebooks}/02_primary_capsules.ipynb`, where your teacher
   asks you to (your course's page). Keep the notebook's name in the file name: upload it as it is,
   or add your name in front (`alice_02_primary_capsules.ipynb`). Not a PDF, not a zip of this
   folder.
"""


def source_files(root=ROOT):
    """Paths (relative, POSIX) a clean checkout of ``root`` holds: tracked files and new files git
    does not ignore; every file, less caches, when ``root`` is not a git repository."""
    root = Path(root)
    try:
        done = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                              cwd=root, capture_output=True, check=True)
        names = [n for n in done.stdout.decode().split("\0") if n]
    except (OSError, subprocess.CalledProcessError):
        names = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]
    from capslib.swap import is_temporary  # a build or ship under way (or killed)
    return sorted(n for n in set(names) if (root / n).is_file()
                  and not SKIPPED_PARTS.intersection(n.split("/"))
                  and not any(is_temporary(part) for part in n.split("/")))


def bundle_plan(root=ROOT):
    """{path in the bundle: path in the repository} for every copied file."""
    plan = {}
    for name in source_files(root):
        top, _, rest = name.partition("/")
        if top not in COPIED or (rest and top == "student" and not name.endswith(".ipynb")):
            continue
        if name.startswith("capslib/classroom/"):  # the teacher's tools: not for students
            continue
        plan[f"{COPIED[top]}/{rest}" if rest else COPIED[top]] = Path(root) / name
    missing = [top for top in COPIED if not any(
        src == Path(root) / top or Path(root) / top in src.parents for src in plan.values())]
    if missing:
        raise SystemExit(f"handout: {', '.join(missing)} missing from {root}")
    return plan


def notebook_titles(paths):
    """Rows of the README's table: file name and the notebook's first heading."""
    rows = []
    for path in sorted(paths):
        cells = json.loads(Path(path).read_text())["cells"]
        first = "".join(cells[0]["source"]).splitlines()[0] if cells else ""
        rows.append(f"| `{Path(path).name}` | {first.lstrip('# ').strip()} |")
    return "\n".join(rows)


def readme_section(title, readme):
    """The ``## title`` section of a Markdown file (up to the next ``## ``), or ''."""
    out, inside = [], False
    for line in Path(readme).read_text().splitlines() if Path(readme).is_file() else []:
        if line.startswith("## "):
            inside = line[3:].strip() == title
        if inside:
            out.append(line)
    return "\n".join(out).strip()


def generated_files(plan, root=ROOT):
    """{path in the bundle: text} of the files written for students."""
    notebooks = [src for dst, src in plan.items() if dst.startswith(f"{NOTEBOOK_FOLDER}/")]
    readme = STUDENT_README.replace("{notebooks}", NOTEBOOK_FOLDER).replace(
        "{table}", notebook_titles(notebooks))
    # The README's Performance section: the measured runs behind results/ (notebook 06's
    # student copy links to the repository's README for them).
    performance = readme_section("Performance", Path(root) / "README.md")
    if performance:
        readme += "\n" + performance + "\n"
    server = {"ServerApp": {"jpserver_extensions": {e: False for e in NBGRADER_SERVER_EXTENSIONS}}}
    lab = {"disabledExtensions": {e: True for e in NBGRADER_LAB_EXTENSIONS}}
    return {
        "README.md": readme,
        "Makefile": STUDENT_MAKEFILE,
        "environment.yml": STUDENT_ENVIRONMENT,
        ".gitignore": STUDENT_GITIGNORE,
        "jupyter/jupyter_server_config.d/capsnet-student.json": json.dumps(server, indent=2) + "\n",
        "jupyter/labconfig/page_config.json": json.dumps(lab, indent=2) + "\n",
    }


def check_no_answers(folder):
    """Raise if a file of ``folder`` holds a solution or hidden-test marker."""
    leaks = []
    for path in sorted(Path(folder).rglob("*")):
        if ".git" in path.parts or not path.is_file() or path.suffix in STORED_SUFFIXES:
            continue
        text = path.read_bytes().decode("utf-8", errors="replace")
        leaks += [f"{path.relative_to(folder)}: {m}" for m in FORBIDDEN_MARKERS if m in text]
    if leaks:
        raise SystemExit("handout: answers in the bundle, nothing written:\n  " + "\n  ".join(leaks))


def write_zip(folder, zip_path):
    """Zip ``folder`` (as its own top folder, without .git and the build's MANIFEST);
    compressed files are stored."""
    folder, tmp = Path(folder), Path(zip_path).with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w") as zf:
        for path in sorted(folder.rglob("*")):
            rel = path.relative_to(folder)
            if ".git" in rel.parts or rel.as_posix() == MANIFEST or not path.is_file():
                continue
            method = zipfile.ZIP_STORED if path.suffix in STORED_SUFFIXES else zipfile.ZIP_DEFLATED
            zf.write(path, f"{folder.name}/{rel.as_posix()}", compress_type=method)
    os.replace(tmp, zip_path)


def git_commit(folder):
    """Commit everything in ``folder`` on ``main`` (a new repository if it is none yet);
    return the new commit's hash, or '' when nothing changed since the last commit."""
    def git(*args, check=True):
        return subprocess.run(["git", *args], cwd=folder, check=check, capture_output=True, text=True)
    if not (Path(folder) / ".git").is_dir():
        git("init", "-q")
        git("symbolic-ref", "HEAD", "refs/heads/main")
    exclude = Path(folder) / ".git" / "info" / "exclude"  # the build's record stays local
    exclude.parent.mkdir(parents=True, exist_ok=True)
    if f"/{MANIFEST}" not in (exclude.read_text().splitlines() if exclude.is_file() else []):
        with open(exclude, "a") as f:
            f.write(f"/{MANIFEST}\n")
    git("add", "-A")
    has_head = git("rev-parse", "--verify", "-q", "HEAD", check=False).returncode == 0
    if has_head and git("diff", "--cached", "--quiet", check=False).returncode == 0:
        return ""
    identity = []
    if not git("config", "user.email", check=False).stdout.strip():
        identity = ["-c", "user.name=capsnet-course", "-c", "user.email=capsnet-course@localhost"]
    message = "The students' hand-out" + (" (updated)" if has_head else "")
    git(*identity, "commit", "-q", "-m", message)
    return git("rev-parse", "HEAD").stdout.strip()


# -- a build never loses or leaks ------------------------------------------------------------
# The bundle is built in a hidden folder beside the target (``.capsnet-student.build-PID-*``),
# its git repository included, and exchanged with the previous hand-out in one rename
# (capslib.swap): a kill at any moment leaves the old hand-out or the new one, whole, each
# with its own .git when it was built with --git. The folder a build writes records its files
# in MANIFEST; a folder without it, or with files the build did not make or changed, is not
# replaced without --force.

MANIFEST = ".capsnet-handout.json"


class HandoutError(Exception):
    """A hand-out that is not replaced or pushed (one line: what and what to do)."""


def _sha256(path):
    from capslib.data import file_sha256
    return file_sha256(path)


def _bundle_files(folder):
    """Paths (relative, POSIX) of the files in ``folder``, less .git and MANIFEST."""
    folder = Path(folder)
    out = []
    for path in folder.rglob("*"):
        rel = path.relative_to(folder)
        if rel.parts[0] == ".git" or rel.as_posix() == MANIFEST:
            continue
        if path.is_file() or path.is_symlink():
            out.append(rel.as_posix())
    return sorted(out)


def write_manifest(folder, name=NAME):
    """Record the files of a freshly built ``folder`` (name and SHA-256 of each)."""
    files = {rel: _sha256(Path(folder) / rel) for rel in _bundle_files(folder)}
    (Path(folder) / MANIFEST).write_text(json.dumps({"handout": name, "files": files}, indent=1) + "\n")


def not_a_handout(folder):
    """Why ``folder`` is not a whole hand-out as the build left it (None: it is)."""
    folder = Path(folder)
    if folder.is_symlink() or not folder.is_dir():
        return "is not a folder" if not folder.is_symlink() else "is a link"
    try:
        recorded = json.loads((folder / MANIFEST).read_text())["files"]
        assert isinstance(recorded, dict)
    except (OSError, ValueError, KeyError, TypeError, AssertionError):
        return f"has no {MANIFEST}: it was not made by the hand-out build"
    present = _bundle_files(folder)
    extra = [rel for rel in present if rel not in recorded]
    if extra:
        more = f" and {len(extra) - 3} more" if len(extra) > 3 else ""
        return f"holds files the build did not make ({', '.join(extra[:3])}{more})"
    changed = [rel for rel in present if _sha256(folder / rel) != recorded[rel]]
    if changed:
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        return f"has files changed since it was built ({', '.join(changed[:3])}{more})"
    missing = [rel for rel in recorded if rel not in present]
    if missing:
        return f"lacks files the build made ({', '.join(missing[:3])})"
    return None


def not_a_handout_zip(zip_path, name=NAME):
    """Why ``zip_path`` is not a hand-out zip (None: it is one: one top folder ``name/``)."""
    try:
        with zipfile.ZipFile(zip_path) as zf:
            names = zf.namelist()
    except (OSError, zipfile.BadZipFile):
        return "is not a zip archive"
    if not names or any(not n.startswith(f"{name}/") for n in names):
        return f"holds more than the folder {name}/"
    return None


def git_toplevel(folder):
    """The top folder of the git repository ``git -C folder`` works in ('' if none)."""
    done = subprocess.run(["git", "-C", str(folder), "rev-parse", "--show-toplevel"],
                          capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else ""


def owns_its_git(folder):
    """Whether ``git -C folder`` works in a repository of ``folder``'s own (not one above it)."""
    top = git_toplevel(folder)
    return bool(top) and os.path.realpath(top) == os.path.realpath(folder)


def build(out=DEFAULT_OUT, name=NAME, git=False, root=ROOT, force=False):
    """Write ``out/name/`` and ``out/name.zip``; return both paths.

    The bundle is built from scratch in a temporary folder beside ``out/name`` and put in
    place only when whole (its repository committed, with ``git``). The ``.git`` of the
    previous hand-out is carried over (copied), so that ``--git`` adds a commit to the
    same history, which pushes as an update. A folder (or zip) there that the build did not
    make is refused (``HandoutError``) unless ``force``."""
    from capslib import swap
    out = Path(out).resolve()
    folder, zip_path = out / name, out / f"{name}.zip"
    plan = bundle_plan(root)
    if out.exists() and not out.is_dir():
        raise HandoutError(f"--out {out}: is a file; give a folder")
    out.mkdir(parents=True, exist_ok=True)
    swap.clean_stale(folder)
    if not force:
        if os.path.lexists(folder) and (why := not_a_handout(folder)):
            raise HandoutError(f"{folder} {why}; move it away or pass --force to replace it")
        if os.path.lexists(zip_path) and (why := not_a_handout_zip(zip_path, name)):
            raise HandoutError(f"{zip_path} {why}; move it away or pass --force to replace it")
    work = swap.temp_sibling(folder, "build")
    try:
        new = work / name
        for dst, src in plan.items():
            (new / dst).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, new / dst)
        for dst, text in generated_files(plan, root).items():
            (new / dst).parent.mkdir(parents=True, exist_ok=True)
            (new / dst).write_text(text)
        check_no_answers(new)
        write_manifest(new, name)
        if (folder / ".git").is_dir() and owns_its_git(folder):
            shutil.copytree(folder / ".git", new / ".git", symlinks=True)
        if git:
            git_commit(new)
        write_zip(new, work / f"{name}.zip")
        swap.replace_folder(new, folder)
        os.replace(work / f"{name}.zip", zip_path)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # the old hand-out, or the unfinished new one
    return folder, zip_path


def push(folder, remote, branch="main"):
    """Push the hand-out's own repository (branch ``main``) to ``remote``'s ``branch``,
    after checking that ``git -C folder`` is that repository, not one above it."""
    folder = Path(folder).resolve()
    if not folder.is_dir():
        raise HandoutError(f"{folder}: no hand-out here; build it with capsnet-classroom handout --git")
    if not owns_its_git(folder):
        top = git_toplevel(folder)
        where = f"git there is the repository of {top}" if top else "it is no git repository"
        raise HandoutError(f"{folder}: {where}, not the hand-out's own; nothing pushed: build it "
                           "with capsnet-classroom handout --git")
    if why := not_a_handout(folder):
        raise HandoutError(f"{folder} {why}; nothing pushed: build it again with "
                           "capsnet-classroom handout --git (--force to replace it)")
    status = subprocess.run(["git", "-C", str(folder), "status", "--porcelain"],
                            capture_output=True, text=True)
    head = subprocess.run(["git", "-C", str(folder), "rev-parse", "--abbrev-ref", "HEAD"],
                          capture_output=True, text=True).stdout.strip()
    if status.returncode or status.stdout.strip() or head != "main":
        raise HandoutError(f"{folder}: its repository is not the build committed on main; "
                           "nothing pushed: run capsnet-classroom handout --git first")
    return subprocess.run(["git", "-C", str(folder), "push", remote, f"main:{branch}"]).returncode


def add_arguments(parser):
    """The options of ``capsnet-classroom handout``."""
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"folder for the bundle and its zip (default {DEFAULT_OUT.relative_to(ROOT)})")
    parser.add_argument("--git", action="store_true",
                        help="also commit the bundle folder on main of a git repository of its own")
    parser.add_argument("--force", action="store_true",
                        help="replace a folder or zip there that an earlier build did not make "
                             "(or that was changed since)")
    parser.add_argument("--push", metavar="REMOTE",
                        help="push the hand-out's own repository (main) to REMOTE, a URL or "
                             "path, after checking it is the hand-out's (alone: no build)")
    parser.add_argument("--branch", default="main",
                        help="with --push: the branch written at REMOTE (default main)")
    parser.set_defaults(run=run)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that the build's temporary folder is removed."""


def _stop_on_sigterm(signum, frame):
    raise _Terminated


def run(args):
    """Build the hand-out (and push it) and say where it is."""
    import signal
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)
    shown = lambda p: p.relative_to(ROOT) if p.is_relative_to(ROOT) else p  # noqa: E731
    try:
        folder = Path(args.out).resolve() / NAME
        if args.git or not args.push:
            folder, zip_path = build(args.out, git=args.git, force=args.force)
            n = len(list((folder / NOTEBOOK_FOLDER).glob("*.ipynb")))
            size = zip_path.stat().st_size / 2**20
            print(f"wrote {shown(folder)}/ ({n} notebooks) and {shown(zip_path)} ({size:.0f} MiB)")
            if args.git and not args.push:
                print(f"committed on branch main of {shown(folder)}/.git; push it with "
                      f"capsnet-classroom handout --push <students' repository URL>"
                      + ("" if args.out == DEFAULT_OUT else f" --out {args.out}"))
        if args.push:
            code = push(folder, args.push, args.branch)
            if code:
                print(f"handout: git push to {args.push} failed (exit {code}); nothing else changed",
                      file=sys.stderr)
                return 1
            print(f"pushed {shown(folder)} (main) to {args.push} ({args.branch})")
    except HandoutError as e:
        print(f"handout: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print("\nhandout: stopped; the hand-out in place, if any, is whole", file=sys.stderr)
        return 143 if isinstance(e, _Terminated) else 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
