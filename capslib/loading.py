"""Loading a trained model, whatever holds it: a ``.keras`` file, a shipped
model's folder (``capslib.shipped``) or a run folder (its ``best.keras``).

It sits above the models (``capslib.model``, ``capslib.baseline``) and the
shipped folder, so that none of them has to import another to dispatch a
file: ``capslib.model`` knows nothing of the baseline or of shipping.
``capslib.model.load_capsnet`` and ``load_classifier`` still work (the
notebooks use them): ``capslib.model`` forwards the two names here.
"""
import warnings
import zipfile
from pathlib import Path

import keras

from capslib.baseline import BaselineCNN  # registered with Keras by importing it
from capslib.model import CapsNet, ModelFileError
from capslib.runs import check_interrupted
from capslib.shipped import load_pretrained

RUN_MODEL = "best.keras"  # a run folder's selected model (``capslib.train``)


def load_capsnet(path):
    """Load a CapsNet saved as ``.keras`` (safe mode, not compiled), a
    shipped-model folder (checksums verified) or a run folder (its best.keras).

    Raises ModelFileError saying which of three things is wrong: no such file,
    not a Keras model file, or a Keras model that is not a CapsNet.
    """
    return load_classifier(path, kinds=(CapsNet,))


def load_classifier(path, kinds=None):
    """Like ``load_capsnet``, for a CapsNet or the baseline CNN (``capslib.baseline``)."""
    kinds = kinds or (CapsNet, BaselineCNN)
    path = Path(path)
    if path.is_dir() and (path / "SHA256SUMS").is_file():
        return load_pretrained(path)
    if path.is_dir() and (path / RUN_MODEL).is_file():
        return load_keras_file(path / RUN_MODEL, kinds)
    if path.is_dir():
        raise ModelFileError(
            f"{path}: a folder, neither a .keras model file nor a shipped model (it holds no "
            f"SHA256SUMS); give a .keras file such as runs/capsnet/{RUN_MODEL}, or a run "
            f"folder that holds one")
    return load_keras_file(path, kinds)


def load_keras_file(path, kinds=(CapsNet, BaselineCNN)):
    """A ``.keras`` file of one of ``kinds``, loaded in safe mode, not compiled."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such file")
    if path.suffix != ".keras" or not zipfile.is_zipfile(path):
        raise ModelFileError(f"{path}: not a Keras model file (expected a .keras zip archive "
                             "such as a run's best.keras)")
    # Keras' warnings are held back until we know no Ctrl-C was swallowed: a Ctrl-C
    # during loading makes Keras warn about a model it "cannot build".
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model = keras.saving.load_model(path, safe_mode=True, compile=False)
        except Exception as e:  # a damaged archive fails in many ways (zip, JSON, h5py)
            check_interrupted()  # Keras' bare except turns Ctrl-C into another error
            raise ModelFileError(f"{path}: not a readable Keras model file ({type(e).__name__}"
                                 f": {str(e)[:200]})") from e
        check_interrupted()  # ... or swallows it and goes on
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if not isinstance(model, kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise ModelFileError(f"{path}: a Keras model ({type(model).__name__} "
                             f"{model.name!r}) but not a {names}")
    return model
