"""The training job of the interruption tests, killed by a real signal at a chosen point.

    python tests/interrupt_child.py RUN_DIR POINT SIGNAL RECIPE_JSON

POINT is one of the keys of ``POINTS``; SIGNAL is KILL, INT or TERM; RECIPE_JSON
the overrides of the quick profile. "loading-best" runs the command line
(``python -m capslib train``) and exits with its code. The process sends the signal to itself at
that point, so the point is exact. Each epoch begun is appended to
RUN_DIR/../epochs_begun.txt.
"""
import json
import os
import signal
import sys
import time
from pathlib import Path

import keras

import capslib.runs
import capslib.train
import capslib.viz
from capslib.config import config_for_profile

run_dir, point, signal_name, recipe = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
begun_log = run_dir.parent / "epochs_begun.txt"


def die():
    os.kill(os.getpid(), getattr(signal, f"SIG{signal_name}"))


class Recorder(keras.callbacks.Callback):
    """Notes each epoch begun; dies in the middle of epoch 2 when asked."""

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        with begun_log.open("a") as f:
            f.write(f"{epoch}\n")

    def on_train_batch_end(self, batch, logs=None):
        if point == "mid-epoch-2" and self.epoch == 1 and batch == 1:
            die()


def wrap(owner, name, before=None, after=None):
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        if before and before(*args, **kwargs):
            die()
        result = original(*args, **kwargs)
        if after and after(*args, **kwargs):
            die()
        return result
    setattr(owner, name, wrapper)


calls = {"evaluate_model": 0}


def _count_evaluations(*args, **kwargs):
    calls["evaluate_model"] += 1
    return calls["evaluate_model"] == 2  # the test set (the first call is validation)


POINTS = {
    # Killed while the model file of epoch 1 is written (after the bytes, before the rename).
    "saving-epoch-1": lambda: wrap(keras.Model, "save", after=lambda *a, **k: True),
    # Killed just after epoch 1 is kept (state.json written; best.keras, log.csv not yet).
    "after-epoch-1-kept": lambda: wrap(
        capslib.runs.RunFolder, "write_state",
        after=lambda self, state: state.epochs_done == 1 and state.history),
    "mid-epoch-2": lambda: None,  # Recorder.on_train_batch_end
    "evaluating-test-set": lambda: wrap(capslib.train, "evaluate_model",
                                        before=_count_evaluations),
    "writing-figures": lambda: wrap(capslib.viz, "save", after=lambda *a, **k: True),
    "loading-best": lambda: None,
}


def swallowing_load_model():
    """Keras' loading as it is: a bare ``except:`` (saving_lib) eats the signal."""
    load = keras.saving.load_model

    def load_model(*args, **kwargs):
        try:
            die()
            time.sleep(2)  # the handler raises here; Keras' except swallows it
        except:  # noqa: E722
            pass
        return load(*args, **kwargs)
    keras.saving.load_model = load_model


POINTS[point]()
if point == "loading-best":  # the command line, a signal while best.keras loads
    from capslib.__main__ import main
    flags = [x for k, v in json.loads(recipe).items() for x in (f"--{k.replace('_', '-')}", str(v))]
    swallowing_load_model()  # only best.keras is loaded so (a backup: load_weights)
    sys.exit(main(["train", "--run-dir", str(run_dir), "--verbose", "0", *flags]))
config = config_for_profile("quick", **json.loads(recipe))
capslib.train.train(config, run_dir, verbose=0, callbacks=[Recorder()])
