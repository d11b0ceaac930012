"""capslib: the Capsule Network of Sabour, Frosst & Hinton (2017) on Keras 3.

One module per idea: ``data`` (Fashion-MNIST, split, augmentation), ``ops``
(squash, safe_norm), ``routing`` (routing by agreement), ``layers`` (capsule
layers), ``losses`` (margin and reconstruction), ``model`` (the CapsNet),
``config`` (recipes and ``CAPSLIB_PROFILE``), ``train`` (the main job),
``runs`` (the run folder: lock, atomic writes, state),
``viz`` (figures), ``bench`` (throughput), ``scale`` (devices, precision),
``pretrained`` (the shipped trained model), ``baseline`` (the paper's baseline
CNN), ``stats`` (intervals and tests for accuracies), ``experiment`` (does
routing help? notebook 08), ``checks`` (the exercises' checks).
"""
import sys

from capslib import _startup

# `python -m capslib.classroom` (the teacher's tools) is not the training command.
_submodule = any(a.startswith("capslib.") for a in getattr(sys, "orig_argv", [])[1:3])
if sys.argv[:1] == ["-m"] and not _submodule:  # `python -m capslib`: a command starts
    import os
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow is imported below
    _startup.install()
elif sys.argv[:1] == ["-m"] or sys.argv[0].endswith("capsnet-classroom"):  # the teacher's tools
    import os
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

with _startup.ctrl_c_not_lost():  # importing Keras, TensorFlow and JAX takes seconds
    from capslib import (baseline, config, data, layers, losses, model, ops, pretrained,
                         routing, stats, viz)
from capslib.config import TrainConfig, config_for_profile, get_profile
from capslib.data import CLASS_NAMES, load_fashion_mnist, split_train_val
from capslib.model import CapsNet, build_capsnet, compile_capsnet

__version__ = "0.1.0"

__all__ = [
    "CLASS_NAMES", "CapsNet", "TrainConfig", "baseline", "build_capsnet", "compile_capsnet",
    "config", "config_for_profile", "data", "get_profile", "layers",
    "load_fashion_mnist", "losses", "model", "ops", "pretrained", "routing", "split_train_val",
    "stats", "viz",
]
