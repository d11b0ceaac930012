"""pyproject.toml is the single source of dependencies; the other install
paths (environment.yml, constraints.txt, Makefile) must agree with it."""

import re
import shutil
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def project():
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]


@pytest.fixture(scope="module")
def env():
    return yaml.safe_load((ROOT / "environment.yml").read_text())


@pytest.fixture(scope="module")
def pins():
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        req = Requirement(line)
        spec = list(req.specifier)
        assert len(spec) == 1 and spec[0].operator == "==", f"not an exact pin: {line}"
        name = canonicalize_name(req.name)
        assert name not in pins, f"pinned twice: {name}"
        pins[name] = spec[0].version
    return pins


def all_requirements(project):
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        reqs += [Requirement(r) for r in extra]
    return reqs


def split_env_deps(env):
    conda, pip = [], []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip += dep["pip"]
        else:
            conda.append(dep)
    return conda, pip


def test_python_bound_matches(project, env):
    conda, _ = split_env_deps(env)
    pythons = [d for d in conda if re.match(r"python\b", d)]
    assert len(pythons) == 1
    bound = SpecifierSet(pythons[0][len("python"):])
    assert bound == SpecifierSet(project["requires-python"])


def test_env_pip_section_installs_this_project(project, env):
    _, pip = split_env_deps(env)
    assert len(pip) == 1
    m = re.fullmatch(r"(-e\s+)?\.\[([\w,\-]+)\]", pip[0].strip())
    assert m, f"expected `-e .[extras]`, got {pip[0]!r}"
    extras = set(m.group(2).split(","))
    assert extras <= set(project["optional-dependencies"])


def test_env_pins_nothing_pyproject_lacks(project, env):
    conda, _ = split_env_deps(env)
    listed = {canonicalize_name(r.name) for r in all_requirements(project)}
    for dep in conda:
        name = canonicalize_name(re.split(r"[<>=!~ ]", dep, maxsplit=1)[0])
        assert name in {"python", "pip"} | listed, f"{dep} is not in pyproject.toml"


def test_constraints_pin_every_dependency_within_range(project, pins):
    for req in all_requirements(project):
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not pinned in constraints.txt"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {name}=={pins[name]}, outside {req.specifier}"
        )


def test_constraints_exclude_the_project_itself(project, pins):
    assert canonicalize_name(project["name"]) not in pins
    assert not {"pip", "setuptools"} & set(pins)


def test_makefile_extras_exist(project):
    m = re.search(r"^EXTRAS \?= (\S+)$", (ROOT / "Makefile").read_text(), re.M)
    assert m, "Makefile must define EXTRAS ?= ..."
    assert set(m.group(1).split(",")) <= set(project["optional-dependencies"])


def test_only_capslib_is_packaged():
    with open(ROOT / "pyproject.toml", "rb") as f:
        find = tomllib.load(f)["tool"]["setuptools"]["packages"]["find"]
    # capslib and its subpackages (capslib.classroom: the teacher's tools), nothing else
    assert find["include"] == ["capslib", "capslib.*"]


def test_the_built_metadata_names_the_licences(tmp_path):
    """The wheel's METADATA (built as tests/test_installed.py builds the wheel: from a copy
    of the sources, with this environment's setuptools) says MIT, and carries LICENSE."""
    import subprocess
    import sys
    for name in ("pyproject.toml", "LICENSE", "LICENSE-TEXT.md"):
        shutil.copy(ROOT / name, tmp_path)
    shutil.copytree(ROOT / "capslib", tmp_path / "capslib",
                    ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run(
        [sys.executable, "-c", "from setuptools import build_meta; "
         "import os; os.mkdir('meta'); print(build_meta.prepare_metadata_for_build_wheel('meta'))"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    dist_info = tmp_path / "meta" / built.stdout.strip().splitlines()[-1]
    metadata = (dist_info / "METADATA").read_text()
    assert "\nLicense: MIT\n" in metadata or "\nLicense-Expression: MIT\n" in metadata, metadata
    assert "\nClassifier: License :: OSI Approved :: MIT License\n" in metadata, metadata
    assert "\nLicense-File: LICENSE\n" in metadata, metadata


# -- Colab, Kaggle and Binder (capslib.course) --------------------------------------


def test_the_shipped_manifest_is_the_repository_s_data_and_results():
    """The SHA-256 the package ships for the files it fetches are this checkout's."""
    from capslib import course
    assert course.manifest_text(ROOT) == (ROOT / "capslib" / "_course_files.py").read_text(), \
        "data/ or results/ changed: run `python -m capslib.course --write-manifest`"
    from capslib import data
    assert {f"data/fashion-mnist/{n}": sha for n, sha in data.FILES.items()}.items() \
        <= course.manifest().items()


def _first_code_cell(path):
    import json
    cells = json.loads(path.read_text())["cells"]
    return "".join(next(c for c in cells if c["cell_type"] == "code")["source"])


def test_every_notebook_installs_the_course_on_colab_and_kaggle_only():
    from capslib import course
    heads = {}
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        source = _first_code_cell(path)
        heads[path.name] = source.split("import capslib  # first")[0]
    assert len(set(heads.values())) == 1, "the notebooks' setup lines differ"
    head = next(iter(heads.values()))
    assert 'if "google.colab" in sys.modules or "KAGGLE_KERNEL_RUN_TYPE" in os.environ:' in head
    assert f'"CAPSNET_COURSE_URL", "{course.REPOSITORY}")' in head
    # Outside Colab and Kaggle nothing of it runs: the lines under the `if` are indented.
    inside = head.split("os.environ:", 1)[1].splitlines()[1:]
    assert inside and all(line.startswith("    ") for line in inside if line.strip())


def test_student_copies_open_on_colab_kaggle_and_binder():
    from capslib import course
    for path in sorted((ROOT / "student").glob("[0-9][0-9]_*.ipynb")):
        text = path.read_text()
        for link in course.launch_links(path.name, course.REPOSITORY).values():
            assert link in text, (path.name, link)
        assert "](../" not in text, f"{path.name}: a link outside student/"


def test_binder_installs_the_student_edition_only(project):
    postbuild = ROOT / "binder" / "postBuild"
    assert postbuild.stat().st_mode & 0o111, "repo2docker runs postBuild: it must be executable"
    extras = re.findall(r'"\.\[([^\]]*)\]"', postbuild.read_text())
    assert extras == ["notebooks"], extras
    assert set(extras[0].split(",")) <= set(project["optional-dependencies"])
    assert "-c constraints.txt" in postbuild.read_text()
    assert (ROOT / "binder" / "runtime.txt").read_text().startswith("python-3.")


def test_course_urls_come_from_one_setting(monkeypatch):
    from capslib import course
    monkeypatch.delenv("CAPSNET_COURSE_URL", raising=False)
    assert course.raw_url("data/x y.gz").startswith("https://raw.githubusercontent.com/")
    monkeypatch.setenv("CAPSNET_COURSE_URL", "http://127.0.0.1:8000/course/")
    assert course.raw_url("data/x y.gz") == "http://127.0.0.1:8000/course/data/x%20y.gz"
    assert course.launch_links("01_data.ipynb") == {}  # Colab and co. read GitHub only
    monkeypatch.setenv("CAPSNET_COURSE_URL", "https://github.com/someone/fork.git")
    links = course.launch_links("01_data.ipynb")
    assert links["Colab"].endswith("/github/someone/fork/blob/main/student/01_data.ipynb")
    assert "v2/gh/someone/fork/main?labpath=student%2F01_data.ipynb" in links["Binder"]
