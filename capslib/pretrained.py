"""A trained CapsNet shipped with the course, loaded in one checked call.

A shipped model is a folder (``data/capsnet-fashion-mnist/`` for the course's)::

    config.json     the CapsNet's ``get_config()``: its architecture
    weights.npz     one array per weight, keyed by the weight's path (float16 to halve the size)
    metrics.json    the training job's metrics (test accuracy, confusion matrix, ...)
    SHA256SUMS      the checksum of each file above (``sha256sum -c SHA256SUMS`` works too)
    MODEL_CARD.md   data, recipe, hardware, figures and limits (written with the run)

``load_pretrained()`` verifies every checksum before reading anything and
returns an ordinary ``CapsNet``; ``save_pretrained()`` writes such a folder.
"""
import json
from pathlib import Path

import numpy as np

from capslib.data import file_sha256
from capslib.model import CapsNet, ModelFileError

SHIPPED_DIR = Path(__file__).resolve().parents[1] / "data" / "capsnet-fashion-mnist"
FILES = ("config.json", "weights.npz", "metrics.json")


class PretrainedError(ModelFileError):
    """A shipped model that is missing, incomplete or altered."""


def available(folder=SHIPPED_DIR):
    """Whether ``folder`` holds a shipped model (its checksums are checked on loading)."""
    return (Path(folder) / "SHA256SUMS").is_file()


def save_pretrained(model, folder, metrics=None, dtype="float16"):
    """Write ``model`` (a built CapsNet) as a shipped-model folder; return its path.

    Weights are stored as ``dtype`` (float16 halves the size; measure the
    accuracy of the stored weights before shipping them).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(model.get_config(), indent=2) + "\n")
    np.savez(folder / "weights.npz",
             **{w.path: np.asarray(w.numpy(), dtype=dtype) for w in model.weights})
    (folder / "metrics.json").write_text(json.dumps(metrics or {}, indent=2) + "\n")
    sums = "".join(f"{file_sha256(folder / name)}  {name}\n" for name in FILES)
    (folder / "SHA256SUMS").write_text(sums)
    return folder


def _verified(folder):
    sums_path = folder / "SHA256SUMS"
    if not sums_path.is_file():
        raise PretrainedError(
            f"{folder}: no shipped model here (no SHA256SUMS). Train your own with "
            "06_training.ipynb or `python -m capslib train`, or restore the folder with "
            "`git checkout -- data/`.")
    expected = {}
    for line in sums_path.read_text().splitlines():
        digest, _, name = line.strip().partition("  ")
        expected[name] = digest
    for name in FILES:
        path = folder / name
        if name not in expected:
            raise PretrainedError(f"{sums_path}: no checksum for {name}")
        if not path.is_file():
            raise PretrainedError(f"{path}: missing; restore it with `git checkout -- data/`")
        found = file_sha256(path)
        if found != expected[name]:
            raise PretrainedError(
                f"{path}: altered (SHA-256 {found[:12]}..., expected {expected[name][:12]}...); "
                "restore it with `git checkout -- data/`")


def load_pretrained(folder=SHIPPED_DIR):
    """The shipped CapsNet, checksums verified, weights as float32, not compiled."""
    folder = Path(folder)
    _verified(folder)
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
    _verified(folder)
    return json.loads((folder / "metrics.json").read_text())
