"""capslib: the Capsule Network of Sabour, Frosst & Hinton (2017) on Keras 3.

One module per idea: ``data`` (Fashion-MNIST, split, augmentation), ``ops``
(squash, safe_norm), ``routing`` (routing by agreement), ``layers`` (capsule
layers), ``losses`` (margin and reconstruction), ``model`` (the CapsNet),
``baseline`` (the paper's baseline CNN), ``loading`` (a saved model, whatever
holds it), ``config`` (recipes and ``CAPSLIB_PROFILE``), ``train`` (the main
job), ``runs`` (the run folder: lock, atomic writes, state), ``viz``
(figures), ``bench`` (throughput), ``scale`` (devices, precision), ``shipped``
(the shipped model's folder), ``pretrained`` (shipping a run as the course's
model), ``stats`` (intervals and tests for accuracies), ``experiment`` (does
routing help? notebook 08), ``checks`` (the exercises' checks), ``course`` (the
course's repository URL; its files fetched, SHA-256 verified, by an installed capslib).

Submodules and the names below are imported when first used (PEP 562), so
that ``import capslib`` (and the teacher's tools, ``capslib.classroom``) do not
wait seconds for Keras, TensorFlow or JAX; ``capslib.CapsNet`` or
``from capslib import checks`` imports them then.
"""
import importlib
import importlib.machinery
import sys

from capslib import _startup, _tf_startup

_tf_startup.install()  # TensorFlow's start-up lines off a notebook's first screen

# `python -m capslib.classroom` (the teacher's tools) is not the training command.
_submodule = any(a.startswith("capslib.") for a in getattr(sys, "orig_argv", [])[1:3])
_command = sys.argv[:1] == ["-m"] and not _submodule  # `python -m capslib`: a command starts
if _command:
    import os
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow is imported
    _startup.install()
elif sys.argv[:1] == ["-m"] or sys.argv[0].endswith("capsnet-classroom"):  # the teacher's tools
    import os
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

__version__ = "0.1.0"

# The submodules `capslib.<name>` gives without an import of its own.
_SUBMODULES = (
    "baseline", "bench", "checks", "config", "course", "data", "device", "evidence", "experiment",
    "explore", "layers", "loading", "losses", "model", "ops", "pretrained", "rounds", "routing",
    "runs", "scale", "shipped", "stats", "swap", "train", "viz",
)
# name -> the submodule that defines it
_NAMES = {
    "TrainConfig": "config", "config_for_profile": "config", "get_profile": "config",
    "CLASS_NAMES": "data", "load_fashion_mnist": "data", "split_train_val": "data",
    "CapsNet": "model", "build_capsnet": "model", "compile_capsnet": "model",
}

__all__ = [
    "CLASS_NAMES", "CapsNet", "TrainConfig", "baseline", "build_capsnet", "compile_capsnet",
    "config", "config_for_profile", "data", "get_profile", "layers",
    "load_fashion_mnist", "losses", "model", "ops", "pretrained", "routing", "split_train_val",
    "stats", "viz",
]


def __getattr__(name):
    if name in _SUBMODULES:
        module_name = name
    elif name in _NAMES:
        module_name = _NAMES[name]
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # Importing Keras, TensorFlow or JAX takes seconds: a Ctrl-C meanwhile that
    # something swallows (JAX's gc callback) is raised when the import ends.
    with _startup.ctrl_c_not_lost():
        module = importlib.import_module(f"{__name__}.{module_name}")
    value = module if name == module_name else getattr(module, name)
    globals()[name] = value  # found directly from now on
    return value


def __dir__():
    return sorted({*globals(), *_SUBMODULES, *_NAMES})


class _GuardedSubmodules:
    """`import capslib.train` straight away (the notebooks do) gets the protection
    `capslib.train` through ``__getattr__`` gets: it may be what imports Keras."""

    @staticmethod
    def find_spec(fullname, path=None, target=None):
        package, _, name = fullname.rpartition(".")
        if package != __name__ or name not in _SUBMODULES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _startup.WrappedLoader(spec.loader, _startup.ctrl_c_not_lost)
        return spec


if not any(isinstance(f, type) and f.__name__ == _GuardedSubmodules.__name__
           for f in sys.meta_path):  # once, also if this module is run again (reload)
    sys.meta_path.insert(0, _GuardedSubmodules)


if _command:
    # The command imports what it needs while the start-up handler above is in place
    # (a signal now is one line and exit 130 / 143, nothing written): all of it, first.
    for _name in __all__:
        __getattr__(_name)
