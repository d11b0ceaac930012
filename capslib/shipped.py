"""The shipped-model folder: what it holds, writing it, verifying and loading it.

A shipped model is a folder (``data/capsnet-fashion-mnist/`` for the course's)::

    config.json     the CapsNet's ``get_config()``: its architecture
    weights.npz     one array per weight, keyed by the weight's path (float16 to halve the size)
    metrics.json    the training job's metrics (test accuracy, confusion matrix, ...)
    SHA256SUMS      the checksum of each file above (``sha256sum -c SHA256SUMS`` works too)
    MODEL_CARD.md   data, recipe, hardware, figures and limits (written with the run)

``load_pretrained()`` verifies every checksum before reading anything and
returns an ordinary ``CapsNet``; ``save_pretrained()`` writes such a folder.
Shipping a finished run as such a folder is ``capslib.pretrained``'s work; this
module sits below it (and below ``capslib.loading``), beside the model.
"""
import json
from pathlib import Path

import numpy as np

from capslib import course
from capslib.data import checkout_root, course_root, file_sha256
from capslib.model import CapsNet, ModelFileError


RELATIVE = "data/capsnet-fashion-mnist"  # in the course folder and its repository


def _shipped_dir():
    """The course folder's copy (found from the working folder, never site-packages);
    else the checkout capslib is imported from, when that one holds the model; else, for
    an installed capslib (Colab, a pip install), the copy fetched from the course's
    repository when first used (``capslib.course``)."""
    for root in (course_root(), checkout_root()):
        if root is not None and (root / RELATIVE / "SHA256SUMS").is_file():
            return root / RELATIVE
    if checkout_root() is None:
        return course.cached(RELATIVE)
    return course_root() / RELATIVE


def _fetched(folder):
    """The cache's copy of the shipped model is fetched on first use (one line if it fails)."""
    if course.is_cached_copy(folder) and not course.present(RELATIVE):
        try:
            course.fetch_folder(RELATIVE)
        except course.DownloadError as e:
            raise PretrainedError(f"the shipped model: {e}") from None


SHIPPED_DIR = _shipped_dir()
FILES = ("config.json", "weights.npz", "metrics.json")
CARD = "MODEL_CARD.md"
SHIPPED_FILES = (*FILES, CARD, "SHA256SUMS")  # all that a shipped folder holds


class PretrainedError(ModelFileError):
    """A shipped model that is missing, incomplete or altered."""


def available(folder=SHIPPED_DIR):
    """Whether ``folder`` holds a shipped model (its checksums are checked on loading);
    the download cache's copy is fetched first."""
    _fetched(folder)
    return (Path(folder) / "SHA256SUMS").is_file()


def save_pretrained(model, folder, metrics=None, dtype="float16"):
    """Write ``model`` (a built CapsNet) as a shipped-model folder; return its path.

    Weights are stored as ``dtype`` (float16 halves the size; measure the
    accuracy of the stored weights before shipping them).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(model.get_config(), indent=2) + "\n")
    np.savez_compressed(folder / "weights.npz",  # zip-deflated: under 15 MiB
             **{w.path: np.asarray(w.numpy(), dtype=dtype) for w in model.weights})
    (folder / "metrics.json").write_text(json.dumps(metrics or {}, indent=2) + "\n")
    sums = "".join(f"{file_sha256(folder / name)}  {name}\n" for name in FILES)
    (folder / "SHA256SUMS").write_text(sums)
    return folder


def _restore_hint():
    if checkout_root() is None and course.is_cached_copy(SHIPPED_DIR):
        return f"delete {SHIPPED_DIR} to fetch it again"
    if checkout_root() is not None:
        return "restore it with `git checkout -- data/`"
    return "copy the course's data/capsnet-fashion-mnist folder again"


def verify(folder):
    """Raise ``PretrainedError`` unless every file the folder's SHA256SUMS names is there
    and unchanged (the card too, when the sums name it)."""
    _fetched(folder)
    sums_path = folder / "SHA256SUMS"
    if not sums_path.is_file():
        raise PretrainedError(
            f"{folder}: no shipped model here (no SHA256SUMS). Train your own with "
            "06_training.ipynb or `python -m capslib train`, or restore the folder: "
            f"{_restore_hint()}.")
    expected = {}
    for line in sums_path.read_text().splitlines():
        # "DIGEST  NAME" (text mode) or "DIGEST *NAME" (`sha256sum -b`, binary mode)
        digest, _, name = line.strip().partition(" ")
        expected[name[1:] if name[:1] in " *" else name] = digest
    # The card too, when the sums name it (a shipped run's folder): it is the model's label.
    for name in (*FILES, *(n for n in (CARD,) if n in expected)):
        path = folder / name
        if name not in expected:
            raise PretrainedError(f"{sums_path}: no checksum for {name}")
        if not path.is_file():
            raise PretrainedError(f"{path}: missing; {_restore_hint()}")
        found = file_sha256(path)
        if found != expected[name]:
            raise PretrainedError(
                f"{path}: altered (SHA-256 {found[:12]}..., expected {expected[name][:12]}...); "
                f"{_restore_hint()}")


def load_pretrained(folder=SHIPPED_DIR):
    """The shipped CapsNet, checksums verified, weights as float32, not compiled."""
    folder = Path(folder)
    verify(folder)
    model = CapsNet.from_config(json.loads((folder / "config.json").read_text()))
    model.build((None, *model.image_shape))
    with np.load(folder / "weights.npz") as stored:
        missing = [w.path for w in model.weights if w.path not in stored]
        if missing:
            raise PretrainedError(f"{folder / 'weights.npz'}: no values for {missing[:3]}")
        for w in model.weights:
            value = stored[w.path]
            if value.shape != tuple(w.shape):
                raise PretrainedError(f"{folder / 'weights.npz'}: {w.path} has shape "
                                      f"{value.shape}, the model expects {tuple(w.shape)}")
            w.assign(value.astype("float32"))
    return model


def load_metrics(folder=SHIPPED_DIR):
    """The metrics the shipped model was released with (checksums verified)."""
    folder = Path(folder)
    verify(folder)
    return json.loads((folder / "metrics.json").read_text())
