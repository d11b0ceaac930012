"""The grade, decided outside the student's kernel.

A graded cell earns its points when, and only when, the answers its hidden test recorded
(``capslib.evidence``) agree with the answers the teacher's notebook recorded for the same
exercise on the same inputs: same names, same shapes, every value within the exercise's
tolerance. The expected answers are read from the teacher's executed notebook
(``notebooks/``, never inside the sandbox); the tolerances are here, never in a record a
student's code could write. Nothing that runs in the kernel (a patched check, builtins,
numpy) takes part in the comparison.
"""
import json
from pathlib import Path

from capslib import evidence

DEFAULT_TOLERANCE = 1e-4  # absolute, per value
TOLERANCE = {  # looser where the exercise's epsilon or a rounded statistic allows it
    "ex4_1_capsule_lengths": 1e-3,
    "ex5_2_reconstruction_loss": 1e-3,
    "ex6_2_two_proportion_z_test": 1e-3,
}


def _grade_id(cell):
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")


def expected_answers(teacher_nb):
    """{grade id of a graded cell: its one record} from the teacher's executed notebook.

    Raises ``ValueError`` naming a graded cell without exactly one record (the teacher's
    notebook was not executed after its hidden tests changed).
    """
    if isinstance(teacher_nb, (str, Path)):
        teacher_nb = json.loads(Path(teacher_nb).read_text())
    out = {}
    for cell in teacher_nb["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if not meta.get("grade") or cell.get("cell_type") != "code":
            continue
        records = evidence.read(cell.get("outputs"))
        if len(records) != 1:
            raise ValueError(f"{meta.get('grade_id')}: the teacher's notebook holds {len(records)} "
                             "recorded answers (expected 1): execute it again "
                             "(capsnet-classroom execute NB)")
        out[meta["grade_id"]] = records[0]
    return out


def _squeeze(shape):
    return [n for n in shape if n != 1]


def _compare(got, want, tol, where):
    """None when ``got`` matches ``want``, else a short reason."""
    if not isinstance(got, dict) or set(got) != set(want):
        return f"{where}: not the kind of answer expected"
    if "values" in want:
        shape = got.get("shape")
        if not isinstance(shape, list) or not all(isinstance(n, int) for n in shape):
            return f"{where}: not the kind of answer expected"
        if _squeeze(shape) != _squeeze(want["shape"]):
            return f"{where}: shape {tuple(got.get('shape', []))} instead of {tuple(want['shape'])}"
        values = got.get("values")
        if not isinstance(values, list) or len(values) != len(want["values"]):
            return f"{where}: wrong number of values"
        for g, w in zip(values, want["values"]):
            if w is None or g is None:
                if g is not w:
                    return f"{where}: {'not finite' if g is None else 'finite where NaN expected'}"
                continue
            if isinstance(g, bool) or not isinstance(g, (int, float)) or not abs(float(g) - w) <= tol:
                return f"{where}: wrong values"
        return None
    if "text" in want:
        return None if got.get("text") == want["text"] else f"{where}: wrong value"
    if "items" in want:
        if not isinstance(got.get("items"), list) or len(got["items"]) != len(want["items"]):
            return f"{where}: wrong number of items"
        for i, (g, w) in enumerate(zip(got["items"], want["items"])):
            reason = _compare(g, w, tol, f"{where}[{i}]")
            if reason:
                return reason
        return None
    if "dict" in want:
        if not isinstance(got.get("dict"), dict) or set(got["dict"]) != set(want["dict"]):
            return f"{where}: wrong keys"
        for key in want["dict"]:
            reason = _compare(got["dict"][key], want["dict"][key], tol, f"{where}[{key!r}]")
            if reason:
                return reason
        return None
    return f"{where}: unknown expected answer"


def judge(grade_id, outputs, expected):
    """(passed, reason) for one graded cell of a student's executed notebook.

    ``outputs``: that cell's outputs (as the trusted runner captured them);
    ``expected``: ``expected_answers(...)[grade_id]``. The reason is empty when passed.
    A record of any other form (a student's forgery) fails the cell; it never raises.
    """
    try:
        return _judge(grade_id, outputs, expected)
    except Exception as e:  # RecursionError, OverflowError, TypeError from a forged record
        return False, f"unreadable answers ({type(e).__name__})"


def _judge(grade_id, outputs, expected):
    exercise = grade_id.removesuffix("_check")
    records = evidence.read(outputs)
    if not records:
        return False, "no answers recorded (the check stopped before the hidden tests)"
    if len(records) > 1:
        return False, f"{len(records)} answer records in one cell (only the hidden test records one)"
    got = records[0]
    if got.get("exercise") != expected.get("exercise"):
        return False, "answers recorded for another exercise"
    want_answers, got_answers = expected.get("answers", {}), got.get("answers")
    if not isinstance(got_answers, dict) or set(got_answers) != set(want_answers):
        return False, "not the answers the hidden test records"
    tol = TOLERANCE.get(exercise, DEFAULT_TOLERANCE)
    for name, want in want_answers.items():
        reason = _compare(got_answers[name], want, tol, name)
        if reason:
            return False, f"hidden test: {reason}"
    return True, ""
