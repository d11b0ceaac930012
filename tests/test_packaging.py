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
