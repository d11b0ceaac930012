"""The student hand-out (capslib/classroom/handout.py, `make handout`) and the teacher's
formgrader (`make formgrader`).

The hand-out is built from a clean checkout (the files git lists, copied to a temporary
folder), then the whole bundle, and the zip, are searched for anything of the teacher's:
solution and hidden-test markers, every line of a solution or hidden test that students
are not meant to see, and the answers to the discussion questions in TEACHING.md. The
bundle's own `make open` starts JupyterLab (with this environment, which has nbgrader
installed) and the REST API must list the notebooks with nbgrader's extensions off.
`make formgrader` must serve the formgrader and its students API on a copy of the course
root, with PATH lacking this environment (as when a teacher has not activated it).
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest

# The same under every Keras backend: not run again in the JAX pass (Makefile).
pytestmark = pytest.mark.backend_free

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(sys.executable).parent.parent  # the environment running the tests
NAME = "capsnet-student"
STUDENT_NOTEBOOKS = sorted(p.name for p in (ROOT / "student").glob("*.ipynb"))
MANIFEST = ".capsnet-handout.json"  # the build's record of what it wrote: not zipped, not committed
TOP_LEVEL = {".git", ".gitignore", "Makefile", "README.md", "capslib", "constraints.txt", "data",
             "environment.yml", "jupyter", "notebooks", "pyproject.toml", "results", MANIFEST}
MARKERS = ("BEGIN SOLUTION", "END SOLUTION", "HIDDEN TESTS")
BINARY = {".gz", ".npz", ".png", ".keras", ".h5", ".zip"}


# -- what must never reach a student ------------------------------------------------------------

def _source(cell):
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _between(source, begin, end):
    out, inside = [], False
    for line in source.splitlines():
        if line.strip() == begin:
            inside = True
        elif line.strip() == end:
            inside = False
        elif inside:
            out.append(line)
    return out


def secret_lines():
    """Stripped lines of the teacher's solutions and hidden tests (longer than 8 characters, as
    in test_classroom.py) that students never see: less any line of the student copies and of
    capslib (the library the notebooks import, whose functions the exercises are checked against)."""
    secret = set()
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            lines = (_between(_source(cell), "### BEGIN SOLUTION", "### END SOLUTION")
                     + _between(_source(cell), "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"))
            secret |= {line.strip() for line in lines if len(line.strip()) > 8}
    shipped = set()
    for path in (ROOT / "student").glob("*.ipynb"):
        for cell in json.loads(path.read_text())["cells"]:
            shipped |= {line.strip() for line in _source(cell).splitlines()}
    for path in (ROOT / "capslib").rglob("*.py"):
        shipped |= {line.strip() for line in path.read_text().splitlines()}
    return secret - shipped


def teaching_answers():
    """The opening words (60 characters, whitespace collapsed) of each answer to a discussion
    question in TEACHING.md."""
    text = (ROOT / "TEACHING.md").read_text()
    section = text.split("## Answers to the discussion questions", 1)[1].split("\n## ", 1)[0]
    items = re.findall(r"^\d\. (.+(?:\n {3}.+)*)", section, re.M)
    return [" ".join(item.split())[:60] for item in items]


def readable(name, data):
    """The text to search in one file: its bytes decoded, and for a notebook its cells' sources
    and text outputs too (JSON escapes would hide a line); '' for compressed files."""
    if Path(name).suffix in BINARY:
        return ""
    text = data.decode("utf-8", errors="replace")
    if name.endswith(".ipynb"):
        nb = json.loads(text)
        for cell in nb["cells"]:
            text += "\n" + _source(cell)
            for out in cell.get("outputs", []):
                text += "\n" + "".join(out.get("text", "")) + "\n".join(
                    "".join(v) for v in out.get("data", {}).values() if isinstance(v, (str, list)))
    return text


def leaks(name, data, secret, answers):
    """What of the teacher's one file holds."""
    text = readable(name, data)
    found = [f"{name}: {m}" for m in MARKERS if m in text]
    found += [f"{name}: solution line {line!r}" for line in secret & {ln.strip() for ln in text.splitlines()}]
    flat = " ".join(text.split())
    found += [f"{name}: TEACHING.md answer {a!r}" for a in answers if a in flat]
    return found


# -- the bundle, built from a clean checkout -----------------------------------------------------

@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """(folder, zip) of the hand-out built with --git from a copy of what git lists."""
    tmp = tmp_path_factory.mktemp("handout")
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    checkout = tmp / "checkout"
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (checkout / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, checkout / name)
    done = subprocess.run([sys.executable, "-m", "capslib.classroom", "handout", "--out", str(tmp / "out"),
                           "--git"], cwd=checkout, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return tmp / "out" / NAME, tmp / "out" / f"{NAME}.zip", checkout


def test_the_bundle_holds_what_students_need_and_nothing_of_the_teachers(bundle):
    folder, zip_path, _ = bundle
    assert {p.name for p in folder.iterdir()} == TOP_LEVEL
    assert sorted(p.name for p in (folder / "notebooks").iterdir()) == STUDENT_NOTEBOOKS
    for name in STUDENT_NOTEBOOKS:
        assert (folder / "notebooks" / name).read_bytes() == (ROOT / "student" / name).read_bytes()
    for sub in ("capslib", "data", "results"):  # whole, as a clean checkout has them
        listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", sub],
                                cwd=ROOT, capture_output=True, text=True, check=True).stdout.split("\n")
        expected = {name for name in listed if name and (ROOT / name).is_file()
                    and not name.startswith("capslib/classroom/")}  # the teacher's tools stay out
        got = {p.relative_to(folder).as_posix() for p in (folder / sub).rglob("*") if p.is_file()}
        assert got == expected and got, sub
    assert (folder / "results" / "routing-class" / "results.json").is_file()  # notebook 08 reads it
    assert (folder / "data" / "fashion-mnist" / "train-images-idx3-ubyte.gz").is_file()
    # The students' install: no nbgrader (the classroom extra), JupyterLab on notebooks/.
    makefile = (folder / "Makefile").read_text()
    assert '-e ".[notebooks]"' in makefile and "classroom" not in makefile
    assert "JUPYTER_CONFIG_PATH" in makefile
    readme = (folder / "README.md").read_text()
    assert "make lab" in readme and "3.10" in readme and "## Hand in" in readme
    # The zip holds the same files under one top folder, without .git.
    with zipfile.ZipFile(zip_path) as zf:
        names = {n for n in zf.namelist() if not n.endswith("/")}
    files = {f"{NAME}/{p.relative_to(folder).as_posix()}" for p in folder.rglob("*")
             if p.is_file() and ".git" not in p.relative_to(folder).parts and p.name != MANIFEST}
    assert names == files


def test_no_solution_hidden_test_or_answer_anywhere_in_the_bundle_or_the_zip(bundle):
    folder, zip_path, _ = bundle
    secret, answers = secret_lines(), teaching_answers()
    assert len(secret) > 50 and len(answers) >= 20, "the search lost its targets"
    # The search finds what it looks for: in the teacher's notebooks and TEACHING.md.
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        assert any("solution line" in leak for leak in leaks(path.name, path.read_bytes(), secret, [])), path.name
    assert len(leaks("TEACHING.md", (ROOT / "TEACHING.md").read_bytes(), set(), answers)) == len(answers)

    found = []
    for path in sorted(folder.rglob("*")):
        if path.is_file() and ".git" not in path.relative_to(folder).parts:
            found += leaks(path.relative_to(folder).as_posix(), path.read_bytes(), secret, answers)
    with zipfile.ZipFile(zip_path) as zf:
        for name in zf.namelist():
            found += leaks(f"zip:{name}", zf.read(name), secret, answers)
    assert not found, "\n".join(found)


def test_the_git_option_commits_the_bundle_alone_on_main(bundle):
    folder, _, _ = bundle

    def git(*args):
        return subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, check=True).stdout

    assert git("rev-parse", "--abbrev-ref", "HEAD").strip() == "main"
    assert len(git("log", "--oneline").splitlines()) == 1
    assert git("status", "--porcelain") == ""
    tracked = set(git("ls-files").splitlines())
    assert tracked == {p.relative_to(folder).as_posix() for p in folder.rglob("*")
                       if p.is_file() and ".git" not in p.relative_to(folder).parts
                       and p.name != MANIFEST}
    assert git("rev-parse", "--show-toplevel").strip() == str(folder.resolve())


def test_a_new_hand_out_is_a_new_commit_on_the_same_history(bundle, tmp_path):
    _, _, checkout = bundle
    out = tmp_path / "out"

    def build():
        subprocess.run([sys.executable, "-m", "capslib.classroom", "handout", "--out", str(out), "--git"], cwd=checkout,
                       capture_output=True, check=True, timeout=120)
        return subprocess.run(["git", "log", "--format=%H"], cwd=out / NAME, capture_output=True,
                              text=True, check=True).stdout.split()

    first = build()
    assert build() == first  # nothing changed: no commit
    init = checkout / "capslib" / "__init__.py"
    original = init.read_text()
    init.write_text(original + "# updated for week 2\n")
    try:
        second = build()
    finally:
        init.write_text(original)
    assert len(second) == 2 and second[1:] == first  # pushes as a fast-forward
    assert "week 2" in (out / NAME / "capslib" / "__init__.py").read_text()


# -- Jupyter servers, headless on loopback -------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port, path, token):
    """(status, final URL, body) of a GET on the local server."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                     headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.url, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.url, error.read().decode(errors="replace")


class Server:
    """`make <target>` with a Jupyter server on a free loopback port; stopped on exit."""

    def __init__(self, tmp, cwd, target, *make_args):
        if not shutil.which("make"):
            pytest.skip("no make")
        self.port, self.token = free_port(), "capsnet-test-token"
        lab_args = f"--no-browser --ip=127.0.0.1 --port={self.port} --IdentityProvider.token={self.token}"
        if os.geteuid() == 0:
            lab_args += " --allow-root"
        # No environment's bin/ on PATH: the Makefiles must find their own tools.
        path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                               if p and Path(p).resolve() != (VENV / "bin").resolve())
        env = {**os.environ, "PATH": path, "JUPYTER_CONFIG_DIR": str(tmp / "user-config"),
               "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"), "JUPYTER_DATA_DIR": str(tmp / "data"),
               "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "workspaces")}
        env.pop("JUPYTER_CONFIG_PATH", None)
        env.pop("VIRTUAL_ENV", None)
        self.log = open(tmp / f"{target}.log", "w+")
        self.proc = subprocess.Popen([shutil.which("make"), "-C", str(cwd), target, f"VENV={VENV}",
                                      f"LAB_ARGS={lab_args}", *make_args],
                                     env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def __enter__(self):
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the server stopped:\n{self.output()}")
            try:
                if get(self.port, "/api/status", self.token)[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"no server after 90 s:\n{self.output()}")

    def get(self, path):
        return get(self.port, path, self.token)

    def output(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def __exit__(self, *exc):
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)
        self.log.close()


def page_config(html):
    """JupyterLab's page config (the JSON in the page's jupyter-config-data script)."""
    match = re.search(r'<script id="jupyter-config-data" type="application/json">(.*?)</script>', html, re.S)
    return json.loads(match.group(1))


def test_the_students_jupyterlab_lists_the_notebooks_without_nbgrader(bundle, tmp_path):
    pytest.importorskip("jupyterlab")
    folder, _, _ = bundle
    with Server(tmp_path, folder, "open") as server:
        status, _, body = server.get("/api/contents/notebooks")
        assert status == 200, body
        assert sorted(item["name"] for item in json.loads(body)["content"]) == STUDENT_NOTEBOOKS
        status, url, _ = server.get("/")
        assert status == 200 and url.endswith("/lab/tree/notebooks")  # where make lab opens
        # nbgrader is installed here (the teacher's environment) and still off: no server
        # extension answers, and JupyterLab disables its menus.
        assert server.get("/formgrader")[0] == 404
        assert server.get("/assignments")[0] == 404
        status, _, html = server.get("/lab")
        assert status == 200
        assert "@jupyter/nbgrader" in page_config(html)["disabledExtensions"]
        log = server.output()
    assert "nbgrader" not in log.lower(), log


def test_make_formgrader_serves_the_course_root(tmp_path):
    pytest.importorskip("nbgrader")  # the classroom extra
    course = tmp_path / "course" / "classroom"
    course.mkdir(parents=True)
    shutil.copy(ROOT / "classroom" / "nbgrader_config.py", course / "nbgrader_config.py")
    source = course / "source" / "02_primary_capsules"  # as `make student` stages it
    source.mkdir(parents=True)
    shutil.copy(ROOT / "notebooks" / "02_primary_capsules.ipynb", source)
    before = {name: (ROOT / name).exists() for name in ("gradebook.db", ".nbgrader.log")}
    with Server(tmp_path, ROOT, "formgrader", f"COURSE={course}",
                "-o", f"{VENV}/.installed") as server:
        status, url, html = server.get("/")
        assert status == 200 and "/formgrader/manage_assignments" in url, url
        assert "nbgrader" in html.lower()
        status, _, body = server.get("/formgrader/api/students")  # "Manage students" (alembic)
        assert status == 200, body
        assert json.loads(body) == []
        assert server.get("/formgrader/manage_students")[0] == 200
        status, _, body = server.get("/formgrader/api/assignments")
        assert status == 200 and [a["name"] for a in json.loads(body)] == ["02_primary_capsules"], body
        log = server.output()
    assert (course / "gradebook.db").is_file(), "the gradebook belongs in the course root"
    assert not (course.parent / "gradebook.db").exists()
    assert {name: (ROOT / name).exists() for name in before} == before, "nothing at the repository root"
    for bad in ("not recognized", "Traceback", "course directory root is not a subdirectory"):
        assert bad not in log, log


def test_make_teacher_runs_nbgrader_from_the_course_root_only():
    if not shutil.which("make"):
        pytest.skip("no make")
    dry = subprocess.run(["make", "--no-print-directory", "-n", "-o", f"{VENV}/.installed", "teacher", f"VENV={VENV}"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert dry.startswith("cd classroom && PATH=") and f"{VENV}/bin:" in dry, dry


def test_the_build_refuses_a_bundle_with_a_solution_marker(tmp_path):
    from capslib.classroom import handout
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "x.ipynb").write_text('{"source": "### BEGIN SOLUTION"}')
    with pytest.raises(SystemExit, match="BEGIN SOLUTION"):
        handout.check_no_answers(tmp_path)


# -- a build never loses or leaks (a previous hand-out, a teacher's folder, kills) --------------

def tiny_course(root):
    """A checkout with one file in each folder the hand-out copies (not a git repository: the
    build lists every file)."""
    for name, text in {"capslib/__init__.py": "# capslib\n", "data/a.txt": "data\n",
                       "results/r.json": "{}\n", "pyproject.toml": "[project]\n",
                       "constraints.txt": "\n", "README.md": "# course\n"}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (root / "student").mkdir()
    (root / "student" / "01_data.ipynb").write_text(json.dumps(
        {"cells": [{"cell_type": "markdown", "source": ["# 01 data"]}]}))
    return root


def snapshot(folder):
    """{relative path: bytes} of every file under ``folder`` (.git included)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(Path(folder).rglob("*"))
            if p.is_file()}


def handout_git(folder, *args):
    return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True)


def test_a_folder_the_build_did_not_make_is_never_replaced_without_force(tmp_path):
    from capslib.classroom import handout
    course, out = tiny_course(tmp_path / "course"), tmp_path / "out"
    folder = out / NAME
    folder.mkdir(parents=True)
    (folder / "my-notes.md").write_text("a teacher's notes\n")
    before = snapshot(out)
    with pytest.raises(handout.HandoutError, match=f"{MANIFEST}.*--force"):
        handout.build(out, root=course)
    assert snapshot(out) == before and sorted(p.name for p in out.iterdir()) == [NAME]
    handout.build(out, root=course, force=True)
    assert not (folder / "my-notes.md").exists() and handout.not_a_handout(folder) is None
    handout.build(out, root=course)  # a previous hand-out, whole: replaced without --force
    # A file the build did not make, or one changed since, in a previous hand-out: refused too.
    (folder / ".venv").mkdir()
    (folder / ".venv" / "pyvenv.cfg").write_text("home = /usr\n")
    with pytest.raises(handout.HandoutError, match=r"files the build did not make \(\.venv/pyvenv\.cfg\)"):
        handout.build(out, root=course)
    shutil.rmtree(folder / ".venv")
    (folder / "notebooks" / "01_data.ipynb").write_text("{}")
    with pytest.raises(handout.HandoutError, match=r"changed since it was built \(notebooks/01_data"):
        handout.build(out, root=course)
    assert (folder / "notebooks" / "01_data.ipynb").read_text() == "{}"
    # A zip there that is not a hand-out's: refused as well.
    handout.build(out, root=course, force=True)
    (out / f"{NAME}.zip").write_bytes(b"my own zip")
    with pytest.raises(handout.HandoutError, match=r"capsnet-student.zip is not a zip"):
        handout.build(out, root=course)
    assert (out / f"{NAME}.zip").read_bytes() == b"my own zip"
    assert sorted(p.name for p in out.iterdir()) == [NAME, f"{NAME}.zip"]  # no temporary left


def test_the_command_refuses_in_one_line_with_exit_2(tmp_path):
    out = tmp_path / "out"
    (out / NAME).mkdir(parents=True)
    (out / NAME / "keep.txt").write_text("mine\n")
    done = subprocess.run([sys.executable, "-m", "capslib.classroom", "handout", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("handout:")]
    assert done.returncode == 2 and len(lines) == 1, done.stdout + done.stderr
    assert str(out / NAME) in lines[0] and "--force" in lines[0]
    assert (out / NAME / "keep.txt").read_text() == "mine\n"


def test_push_checks_the_repository_is_the_hand_outs_own(tmp_path):
    from capslib.classroom import handout
    course, out = tiny_course(tmp_path / "course"), tmp_path / "teacher" / "build"
    teacher = tmp_path / "teacher"  # the teacher's repository holds the build folder
    out.mkdir(parents=True)
    assert handout_git(teacher, "init", "-q").returncode == 0
    remote = tmp_path / "remote.git"
    assert handout_git(tmp_path, "init", "-q", "--bare", str(remote)).returncode == 0
    folder, _ = handout.build(out, root=course)  # no --git: git -C folder is the teacher's
    assert not handout.owns_its_git(folder)
    with pytest.raises(handout.HandoutError, match=f"repository of {teacher}.*nothing pushed"):
        handout.push(folder, str(remote))
    with pytest.raises(handout.HandoutError, match="no hand-out here"):
        handout.push(out / "elsewhere", str(remote))
    handout.build(out, root=course, git=True)
    assert handout.owns_its_git(folder)
    (folder / "README.md").write_text("edited by hand\n")  # not what the build committed
    with pytest.raises(handout.HandoutError, match="changed since it was built"):
        handout.push(folder, str(remote))
    handout.build(out, root=course, git=True, force=True)
    assert handout.push(folder, str(remote), branch="student") == 0
    pushed = handout_git(remote, "ls-tree", "-r", "--name-only", "student").stdout.split()
    assert "notebooks/01_data.ipynb" in pushed and MANIFEST not in pushed
    assert handout_git(remote, "branch", "--list").stdout.split() == ["student"]


def test_a_replacement_killed_between_its_two_renames_is_undone_next_time(tmp_path, monkeypatch):
    """Where one atomic exchange is not available: old aside, new in place; a kill in
    between leaves the old one aside, and the next build puts it back first."""
    from capslib import swap
    from capslib.classroom import handout
    course, out = tiny_course(tmp_path / "course"), tmp_path / "out"
    folder, _ = handout.build(out, root=course)
    monkeypatch.setattr(swap, "exchange", lambda a, b: False)
    handout.build(out, root=course)  # the fallback path, whole
    assert handout.not_a_handout(folder) is None
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    aside = out / f".{NAME}.old-{dead.pid}-x"
    os.rename(folder, aside)  # as a kill between the two renames leaves it
    (out / f".{NAME}.build-{dead.pid}-y").mkdir()  # and a killed build's folder
    assert swap.clean_stale(folder) == [f"restored {aside.name}", f"removed .{NAME}.build-{dead.pid}-y"]
    assert handout.not_a_handout(folder) is None
    assert sorted(p.name for p in out.iterdir()) == [NAME, f"{NAME}.zip"]


def _wait_for(predicate, proc, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if predicate():
            return True
        time.sleep(0.005)
    return False


@pytest.mark.heavy
def test_a_git_build_killed_at_any_moment_leaves_a_whole_hand_out_with_its_own_git(bundle, tmp_path):
    """SIGTERM and SIGKILL after 0.2, 0.5, 1 and 2 s (importing), and at each step of the
    build (copying, committing, zipping, about to rename): afterwards the old hand-out or the
    new one is in place, whole, and `git -C DIR rev-parse --show-toplevel` is DIR itself, so
    the push command can never push the teacher's repository."""
    from capslib.classroom import handout
    _, _, checkout = bundle
    out = tmp_path / "out"
    folder = out / NAME
    command = [sys.executable, "-m", "capslib.classroom", "handout", "--out", str(out), "--git"]
    subprocess.run(command, cwd=checkout, capture_output=True, check=True, timeout=300)
    first = handout_git(folder, "rev-parse", "HEAD").stdout.strip()
    init = checkout / "capslib" / "__init__.py"
    original = init.read_text()

    def building():
        return [p for p in out.iterdir() if p.name.startswith(f".{NAME}.build-")]

    def step(name):
        def reached():
            return any(name(p / NAME) for p in building())
        return reached

    def zip_done():  # the zip written: the exchange, then the old hand-out's removal
        state = {"zipping": False}

        def reached():
            zipping = any((p / f"{NAME}.zip.tmp").exists() for p in building())
            state["zipping"] |= zipping
            return state["zipping"] and not zipping
        return reached

    moments = [("after", 0.2), ("after", 0.5), ("after", 1.0), ("after", 2.0),
               ("copying", step(lambda new: (new / "data").is_dir())),
               ("git", step(lambda new: (new / ".git").is_dir())),
               ("zipping", lambda: any((p / f"{NAME}.zip.tmp").exists() for p in building())),
               ("renaming", None)]
    seen = []
    try:
        for i, (sig, (what, when)) in enumerate(
                [(s, m) for s in (signal.SIGTERM, signal.SIGKILL) for m in moments]):
            init.write_text(original + f"# build {i}\n")  # each build a new commit
            proc = subprocess.Popen(command, cwd=checkout, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True)
            if what == "after":
                time.sleep(when)
                hit = proc.poll() is None
            else:
                hit = _wait_for(when or zip_done(), proc)
            if hit:
                os.kill(proc.pid, sig)
            _, err = proc.communicate(timeout=300)
            seen.append((sig.name, what, hit, proc.returncode))
            if sig == signal.SIGTERM and hit and what != "after":
                assert proc.returncode == 143, err  # the build's own handler: temporary removed
                assert not building(), [p.name for p in building()]
            # Whole, with its own repository, committed: the old hand-out or a new one.
            assert handout.not_a_handout(folder) is None, (sig.name, what)
            assert os.path.realpath(handout.git_toplevel(folder)) == os.path.realpath(folder)
            assert handout_git(folder, "status", "--porcelain").stdout == "", (sig.name, what)
            log = handout_git(folder, "log", "--format=%H").stdout.split()
            assert log[-1] == first, (sig.name, what)
    finally:
        init.write_text(original)
    assert all(hit for _, what, hit, _ in seen if what != "after"), seen  # every step was reached
    # The next build goes on: what killed builds left is removed, the history kept.
    subprocess.run(command, cwd=checkout, capture_output=True, check=True, timeout=300)
    assert sorted(p.name for p in out.iterdir()) == [NAME, f"{NAME}.zip"]
    log = handout_git(folder, "log", "--format=%H").stdout.split()
    assert log[-1] == first and handout.not_a_handout(folder) is None
    print(seen)
