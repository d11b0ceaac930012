"""Where the course is, for the teacher's tools.

The course folder holds ``notebooks/`` (the teacher's edition: solutions and
hidden tests) and ``classroom/`` (nbgrader's course root, with
``nbgrader_config.py``). It is found, in this order, from ``$CAPSNET_COURSE``,
from the working folder or one above it, or as the checkout this package was
installed from in editable mode. The student's installation never needs it.
"""
import os
from pathlib import Path

CONFIG = Path("classroom") / "nbgrader_config.py"


class CourseNotFound(Exception):
    """No course folder (notebooks/ and classroom/nbgrader_config.py) was found."""


def is_course(folder):
    folder = Path(folder)
    return (folder / CONFIG).is_file() and (folder / "notebooks").is_dir()


def find_root(start=None):
    """The course folder, or ``None`` when there is none to be found."""
    named = os.environ.get("CAPSNET_COURSE", "").strip()
    if named:
        return Path(named).expanduser().resolve()
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if is_course(folder):
            return folder
    checkout = Path(__file__).resolve().parents[2]  # an editable install's repository
    return checkout if is_course(checkout) else None


def require_root(start=None):
    """``find_root()``, or ``CourseNotFound`` with a one-line way out."""
    root = find_root(start)
    if root is None or not is_course(root):
        where = f"$CAPSNET_COURSE={os.environ['CAPSNET_COURSE']}" if os.environ.get(
            "CAPSNET_COURSE", "").strip() else f"{Path(start or Path.cwd()).resolve()} or above it"
        raise CourseNotFound(
            f"no course folder at {where}: run capsnet-classroom inside the course's folder "
            "(the one holding notebooks/ and classroom/nbgrader_config.py), or give --course DIR")
    return root


# Module-level defaults for the tools; a command given --course sets $CAPSNET_COURSE
# before it imports them. Without a course the paths point at the package's checkout.
ROOT = find_root() or Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
STUDENT = ROOT / "student"
COURSE = ROOT / "classroom"
