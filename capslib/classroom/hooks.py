"""nbgrader hooks of the course, named by the course's ``classroom/nbgrader_config.py``.

- ``cell_timeout(cell)``: seconds a cell may run while autograding. A runaway
  loop in a student's answer is interrupted after ``CAPSLIB_GRADE_TIMEOUT``
  seconds (60 by default) and grading goes on; only the course's own long
  cells (tagged ``long-running`` in ``../notebooks``, source unchanged) get
  ``LONG_CELL_TIMEOUT``.
- after a cell of a notebook hit its limit, the notebook's other cells get
  ``AFTER_TIMEOUT`` seconds (``runner.SandboxedClient``), so one runaway loop costs
  about a minute, not a minute for every cell that calls the looping function.
- ``ApplySandboxRun``: nbgrader's Execute step, replaced by the outputs of the
  sandboxed run and the verdicts decided outside it.
- ``HideHiddenTests``: a feedback preprocessor that removes the hidden tests, the
  recorded answers and any output quoting a hidden test, and replaces the
  traceback of a failed check by its message.
- ``OverwriteLockedCells``: nbgrader's ``OverwriteCells`` (locked cells get
  their original source back, hidden tests included), warning "checksum has
  changed" only for a cell the student really changed: a check cell handed out
  without its hidden tests is the student's copy, unchanged.
"""
import json
import os
import re
from functools import lru_cache

from nbgrader.api import MissingEntry
from nbgrader.preprocessors import NbGraderPreprocessor, OverwriteCells
from traitlets import Unicode

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
                sources.add(long_cell_key(cell))
    return frozenset(sources)


def _source(cell):
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


# nbval's marker and the course's one-line reason under it: the tests' plumbing, not the lesson.
_TEST_PLUMBING = re.compile(r"^# NBVAL_[A-Z_]+[ \t]*(?:\n|$)(?:# Reason: .*(?:\n|$))?", re.M)


def without_test_plumbing(source):
    """``source`` without nbval's ``# NBVAL_...`` lines and the ``# Reason:`` line under each
    (the student copies leave them out; see ``RemoveTestPlumbing``)."""
    return _TEST_PLUMBING.sub("", source)


def long_cell_key(cell_or_source):
    """What makes a cell one of the course's long cells: its source, plumbing aside."""
    source = cell_or_source if isinstance(cell_or_source, str) else _source(cell_or_source)
    return without_test_plumbing(source).strip()


class RemoveTestPlumbing(NbGraderPreprocessor):
    """generate_assignment: the student copy's code cells without nbval's markers."""

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "code":
            cell.source = without_test_plumbing(cell.source)
        return cell, resources


# The first cell's install line on Colab and Kaggle: the repository's URL, as the default.
_INSTALL_URL = re.compile(r'(os\.environ\.get\("CAPSNET_COURSE_URL",\s*")[^"]*(")')
# A Markdown link to a file of the repository outside the notebooks' folder.
_UP_LINK = re.compile(r"\]\(\.\./([^)\s]+)\)")


class CourseLinks(NbGraderPreprocessor):
    """generate_assignment: the student copy as it opens on Colab, Kaggle or Binder, all made
    from the configured repository URL (``capslib.course``: ``REPOSITORY`` or
    ``$CAPSNET_COURSE_URL`` when the copies are made):

    - launch badges under the first Markdown cell's title;
    - the first cell's install line (inert outside Colab and Kaggle) names that repository;
    - links to files above the notebooks' folder (``../README.md#performance``), which a
      student's JupyterLab (it serves ``student/`` alone), Colab and Kaggle cannot open,
      point at the repository's page of that file.
    """

    def preprocess(self, nb, resources):
        from capslib import course
        self._url = course.repository_url()
        name = resources.get("nbgrader", {}).get("notebook") or resources.get(
            "unique_key") or ""
        self._badges = course.badges(f"{name}.ipynb", self._url) if name else ""
        self._first_markdown = True
        return super().preprocess(nb, resources)

    def preprocess_cell(self, cell, resources, index):
        from capslib import course
        if cell.cell_type == "code":
            cell.source = _INSTALL_URL.sub(lambda m: f"{m.group(1)}{self._url}{m.group(2)}",
                                           cell.source)
        elif cell.cell_type == "markdown":
            cell.source = _UP_LINK.sub(lambda m: f"]({course.page_url(m.group(1), self._url)})",
                                       cell.source)
            if self._first_markdown and self._badges:
                title, _, rest = cell.source.partition("\n")
                cell.source = "\n\n".join(filter(None, (title, self._badges, rest.lstrip("\n"))))
            self._first_markdown = False
        return cell, resources


def cell_timeout(cell):
    """nbclient's ``timeout_func``: the long allowance only for an unchanged course cell."""
    if long_cell_key(cell) in long_running_sources():
        return max(LONG_CELL_TIMEOUT, default_timeout())
    return default_timeout()


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


def hidden_lines(nb):
    """The lines of every hidden-test region of ``nb`` worth looking for in an output
    (stripped, longer than 12 characters), and each region's longer number literals."""
    import re
    lines = set()
    for cell in nb.cells:
        source = _source(cell)
        if BEGIN_HIDDEN not in source:
            continue
        inside = source.split(BEGIN_HIDDEN, 1)[1].split(END_HIDDEN, 1)[0]
        for line in inside.splitlines():
            line = line.strip()
            if len(line) > 12 and not line.startswith("#"):
                lines.add(line)
            lines.update(re.findall(r"\d+\.\d{3,}", line))
    return lines


def _output_text(output):
    parts = [output.get("text", ""), output.get("evalue", ""), *output.get("traceback", [])]
    for value in output.get("data", {}).values():
        parts.append(value if isinstance(value, str) else "".join(value) if isinstance(
            value, list) else "")
    return "".join("".join(p) if isinstance(p, list) else str(p) for p in parts)


# Output types a student's code could use to run script in the teacher's browser (the
# formgrader, a feedback page) or to hide text from the filters below.
ACTIVE = ("text/html", "application/javascript", "image/svg+xml", "text/markdown", "text/latex")
_CHECK_LINE = re.compile(r"^(✓ .*|All \d+ checks? passed\.?)$")


def inert(outputs):
    """``outputs`` without active content: HTML, JavaScript, SVG, Markdown and LaTeX are
    dropped (their text/plain form is kept); an output left with nothing is dropped."""
    kept = []
    for output in outputs:
        data = output.get("data")
        if data is not None:
            for mime in ACTIVE:
                data.pop(mime, None)
            if not data:
                continue
        kept.append(output)
    return kept


def check_lines(outputs):
    """Of a graded cell's outputs, what the visible check says: its ✓ lines, its summary
    and the error's message. Anything else there was printed by the student's code while
    the hidden test ran (it may show hidden inputs, in any disguise)."""
    from nbformat.v4 import new_output
    lines, kept = [], []
    for output in outputs:
        if output.get("output_type") == "stream" and output.get("name") == "stdout":
            text = output.get("text", "")
            text = "".join(text) if isinstance(text, list) else text
            lines += [line for line in text.splitlines() if _CHECK_LINE.match(line)]
        elif output.get("output_type") == "error":
            kept.append(output)
    head = [new_output("stream", name="stdout", text="\n".join(lines) + "\n")] if lines else []
    return head + kept


class HideHiddenTests(NbGraderPreprocessor):
    """Feedback that cannot leak, built by the trusted side from the autograded notebook.

    - the hidden-test region is removed from every cell's source;
    - a graded cell shows only what its visible check said (``check_lines``): anything a
      student's code printed while the hidden test ran is dropped, the recorded answers too;
    - active content (HTML, JavaScript, SVG) is dropped (``inert``);
    - any output that quotes a line (or a longer number) of a hidden test is replaced by a
      note, whatever printed it: found by content, not by marker strings;
    - an error in a graded cell is shown as its message alone (a traceback quotes source);
    - outputs are cut to ``output_bytes`` per cell with a note;
    - notebook-level widget state (Colab saves it, nbconvert cannot always read it) is dropped.
    """
    output_bytes = 1_000_000
    _hidden = frozenset()

    def preprocess(self, nb, resources):
        self._hidden = hidden_lines(nb)
        nb.metadata.pop("widgets", None)
        return super().preprocess(nb, resources)

    def preprocess_cell(self, cell, resources, index):
        from capslib.evidence import MIME
        from nbformat.v4 import new_output
        if cell.cell_type != "code":
            return cell, resources
        had_hidden = BEGIN_HIDDEN in cell.source
        cell.source = strip_hidden_tests(cell.source)
        outputs = inert(cell.get("outputs", []))
        if had_hidden or cell.metadata.get("nbgrader", {}).get("grade"):
            outputs = check_lines(outputs)
        kept, size, removed, cut = [], 0, False, False
        for output in outputs:
            if MIME in output.get("data", {}):
                continue
            if output.get("output_type") == "error" and (
                    had_hidden or cell.metadata.get("nbgrader", {}).get("grade")):
                message = f"{output.get('ename', 'Error')}: {output.get('evalue', '')}".rstrip(": ")
                output["traceback"] = [message]
            text = _output_text(output)
            if any(line in text for line in self._hidden):
                removed = True
                continue
            size += len(text)
            if size > self.output_bytes:
                cut = True
                break
            kept.append(output)
        if removed:
            kept.append(new_output("stream", name="stderr",
                                   text="[an output was removed here: it showed a hidden test]\n"))
        if cut:
            kept.append(new_output("stream", name="stderr", text=(
                f"[output cut here: more than {self.output_bytes // 1000} kB]\n")))
        cell.outputs = kept
        return cell, resources


class ApplySandboxRun(NbGraderPreprocessor):
    """nbgrader's Execute, replaced: the outputs come from the sandboxed run the trusted
    grader made (``capslib.classroom.runner``), and each graded cell passes or fails as
    ``capslib.classroom.judge`` decided outside the kernel. No student code runs here.

    Reads ``<runs_dir>/<student>/<assignment>/<notebook>.ipynb`` and ``verdict.json``;
    raises when the run is missing or its cells differ from the notebook being graded.
    """
    runs_dir = Unicode("", help="Folder of the sandboxed runs (the grader writes them)").tag(config=True)

    def preprocess(self, nb, resources):
        import json as _json
        from pathlib import Path as _Path

        import nbformat
        info = resources["nbgrader"]
        folder = _Path(self.runs_dir) / info["student"] / info["assignment"]
        try:
            run = nbformat.read(folder / f"{info['notebook']}.ipynb", as_version=4)
            verdict = _json.loads((folder / "verdict.json").read_text())
        except (OSError, ValueError) as e:
            raise RuntimeError(f"no sandboxed run of {info['student']}/{info['assignment']} "
                               f"({e}): grade with `capsnet-classroom grade`") from None
        if [c.source for c in run.cells] != [c.source for c in nb.cells]:
            raise RuntimeError(f"the sandboxed run of {info['student']}/{info['assignment']} is not "
                               "of this notebook: grade it again")
        judged = verdict.get("judged", {})
        from nbformat.v4 import new_output
        for cell, done in zip(nb.cells, run.cells):
            if cell.cell_type != "code":
                continue
            cell.outputs = inert(done.outputs)  # the formgrader shows them in the teacher's browser
            cell.execution_count = done.get("execution_count")
            grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
            if not cell.metadata.get("nbgrader", {}).get("grade"):
                continue
            passed, reason = judged.get(grade_id, (False, "not run"))
            errors = [o for o in cell.outputs if o.get("output_type") == "error"]
            if passed:
                cell.outputs = [o for o in cell.outputs if o.get("output_type") != "error"]
            elif not errors:
                cell.outputs.append(new_output("error", ename="HiddenTestFailed", evalue=reason,
                                               traceback=[f"HiddenTestFailed: {reason}"]))
        return nb, resources


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
