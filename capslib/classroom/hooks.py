"""nbgrader hooks of the course, named by the course's ``classroom/nbgrader_config.py``.

- ``cell_timeout(cell)``: seconds a cell may run while autograding. A runaway
  loop in a student's answer is interrupted after ``CAPSLIB_GRADE_TIMEOUT``
  seconds (60 by default) and grading goes on; only the course's own long
  cells (tagged ``long-running`` in ``../notebooks``, source unchanged) get
  ``LONG_CELL_TIMEOUT``.
- ``RunawayAwareExecute``: nbgrader's ``Execute`` with those limits; after
  a cell of a notebook hit its limit, the notebook's other cells get
  ``AFTER_TIMEOUT`` seconds, so one runaway loop costs about a minute, not a
  minute for every cell that calls the looping function.
- ``HideHiddenTests``: a feedback preprocessor that removes the hidden tests
  from every cell and replaces the traceback of a failed check by its message.
- ``OverwriteLockedCells``: nbgrader's ``OverwriteCells`` (locked cells get
  their original source back, hidden tests included), warning "checksum has
  changed" only for a cell the student really changed: a check cell handed out
  without its hidden tests is the student's copy, unchanged.
"""
import json
import os
from functools import lru_cache

from nbgrader.api import MissingEntry
from nbgrader.preprocessors import Execute, NbGraderPreprocessor, OverwriteCells

from capslib.classroom.paths import NOTEBOOKS  # noqa: E402
DEFAULT_TIMEOUT = 60
# Once a cell of a notebook hit the limit, the student's function is likely to
# loop again wherever it is called: later cells get this much.
AFTER_TIMEOUT = 5
LONG_CELL_TIMEOUT = 900
LONG_TAG = "long-running"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"


def default_timeout():
    """Seconds per cell: $CAPSLIB_GRADE_TIMEOUT, else 60."""
    value = os.environ.get("CAPSLIB_GRADE_TIMEOUT", "").strip()
    if not value:
        return DEFAULT_TIMEOUT
    try:
        seconds = int(value)
    except ValueError:
        raise SystemExit(f"CAPSLIB_GRADE_TIMEOUT={value!r}: give a whole number of seconds") from None
    if seconds <= 0:
        raise SystemExit(f"CAPSLIB_GRADE_TIMEOUT={value!r}: give a positive number of seconds")
    return seconds


@lru_cache(maxsize=1)
def long_running_sources():
    """Sources of the teacher's cells tagged ``long-running`` (training, experiments)."""
    sources = set()
    # The teacher's notebooks, and the course root's staged sources (a copied course root).
    paths = [*NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"),
             *(NOTEBOOKS.parent / "classroom" / "source").glob("*/[0-9][0-9]_*.ipynb")]
    for path in sorted(paths):
        for cell in json.loads(path.read_text())["cells"]:
            if LONG_TAG in cell.get("metadata", {}).get("tags", []):
                sources.add(_source(cell).strip())
    return frozenset(sources)


def _source(cell):
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def cell_timeout(cell):
    """nbclient's ``timeout_func``: the long allowance only for an unchanged course cell."""
    if _source(cell).strip() in long_running_sources():
        return max(LONG_CELL_TIMEOUT, default_timeout())
    return default_timeout()


class RunawayAwareExecute(Execute):
    """``Execute`` whose time limit drops to ``AFTER_TIMEOUT`` after a runaway cell."""

    def preprocess(self, nb, resources=None, km=None):
        self.timeouts_hit = 0
        return super().preprocess(nb, resources, km=km)

    def _get_timeout(self, cell):
        seconds = cell_timeout(cell) if cell is not None else default_timeout()
        if getattr(self, "timeouts_hit", 0) and _source(cell or {}).strip() not in long_running_sources():
            return min(seconds, AFTER_TIMEOUT)
        return seconds

    async def _async_handle_timeout(self, timeout, cell=None):
        self.timeouts_hit = getattr(self, "timeouts_hit", 0) + 1
        return await super()._async_handle_timeout(timeout, cell)


def strip_hidden_tests(source):
    """The source without its hidden-test region (markers included)."""
    kept, hidden = [], False
    for line in source.split("\n"):
        if BEGIN_HIDDEN in line:
            hidden = True
        elif END_HIDDEN in line:
            hidden = False
        elif not hidden:
            kept.append(line)
    return "\n".join(kept).rstrip("\n")


class HideHiddenTests(NbGraderPreprocessor):
    """Feedback without hidden tests: their lines are removed from every cell,
    and an error in a graded cell is shown as its message alone (a traceback
    would quote the hidden test's source)."""

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type != "code":
            return cell, resources
        had_hidden = BEGIN_HIDDEN in cell.source
        cell.source = strip_hidden_tests(cell.source)
        if had_hidden or cell.metadata.get("nbgrader", {}).get("grade"):
            for output in cell.get("outputs", []):
                if output.get("output_type") == "error":
                    message = f"{output.get('ename', 'Error')}: {output.get('evalue', '')}".rstrip(": ")
                    output["traceback"] = [message]
        return cell, resources


class OverwriteLockedCells(OverwriteCells):
    """``OverwriteCells`` whose checksum warning means a real change."""

    def preprocess_cell(self, cell, resources, index):
        self._as_handed_out = False
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id is not None:
            try:
                source = self.gradebook.find_source_cell(
                    grade_id, self.notebook_id, self.assignment_id).source
                self._as_handed_out = cell.source.strip() == strip_hidden_tests(source).strip()
            except MissingEntry:
                pass
        return super().preprocess_cell(cell, resources, index)

    def report_change(self, name, attr, old, new):
        if attr == "checksum" and self._as_handed_out:
            return  # the student's copy never held the hidden tests
        super().report_change(name, attr, old, new)
