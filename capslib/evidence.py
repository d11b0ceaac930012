"""Answers recorded for the grader: what a hidden test cell hands to the trusted side.

A hidden test no longer decides a grade inside the student's kernel, where a cell
could have replaced any function it calls. It calls the student's function on inputs
the student has never seen and *records* the answers (``record``); the grader reads
them from the cell's output, outside the kernel, and compares them with the answers
the teacher's own notebook recorded (``capslib.classroom.judge``). A student's code
can change what is recorded, but cannot know what it is compared with.

The record is a display output of MIME type ``MIME`` (a JSON string), with a short
text for people. Values: numbers, arrays, tensors, nested lists (as float lists with
their shapes), booleans, strings.
"""
import json
import math

MIME = "text/x-capsnet-answers"


def _plain(value):
    """A JSON-able form of ``value``: {"shape": [...], "values": [...]} for arrays."""
    if isinstance(value, bool):
        return {"shape": [], "values": [1.0 if value else 0.0]}
    if isinstance(value, str):
        return {"text": value}
    if isinstance(value, dict):
        return {"dict": {str(k): _plain(v) for k, v in value.items()}}
    import numpy as np
    try:
        from keras import ops
        array = np.asarray(ops.convert_to_numpy(value) if not isinstance(value, (list, tuple, int, float))
                           else value, dtype="float64")
    except (TypeError, ValueError):
        if isinstance(value, (list, tuple)):
            return {"items": [_plain(v) for v in value]}
        return {"text": repr(value)[:200]}
    return {"shape": list(array.shape),
            "values": [None if not math.isfinite(x) else x for x in array.ravel().tolist()]}


def record(exercise, **answers):
    """Record ``answers`` (name=value) for ``exercise`` as this cell's output for the grader."""
    from IPython.display import display
    payload = {"exercise": exercise, "answers": {k: _plain(v) for k, v in answers.items()}}
    display({MIME: json.dumps(payload),
             "text/plain": f"answers recorded for the grader: {exercise} ({len(answers)})"},
            raw=True)


def read(outputs):
    """The records in a cell's outputs, as a list of dicts (unreadable ones skipped)."""
    found = []
    for output in outputs or []:
        data = output.get("data", {}) if isinstance(output, dict) else {}
        text = data.get(MIME)
        if text is None:
            continue
        try:
            text = "".join(text) if isinstance(text, list) else text
            if not isinstance(text, str) or len(text) > 2_000_000:
                raise ValueError("not a record")
            payload = json.loads(text)
        except (TypeError, ValueError, RecursionError):
            found.append({"exercise": None, "answers": {}, "unreadable": True})
            continue
        if isinstance(payload, dict):
            found.append(payload)
    return found
