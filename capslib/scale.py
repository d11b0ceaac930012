"""Where training runs: precision and data-parallel devices, with each
backend's standard API (no home-made distribution).

- ``mixed_precision``: the ``mixed_bfloat16`` policy; capsule routing, lengths
  and losses stay float32 (see ``capslib.model`` and ``capslib.losses``).
- ``distribute``: TensorFlow's ``tf.distribute.MirroredStrategy`` or JAX's
  ``keras.distribution.DataParallel`` over all local devices. The global
  batch is split between the devices; it should divide evenly.
"""
import contextlib
import math
import time

import keras


def local_devices():
    """Accelerators if any, else CPUs, as the backend names them."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf
        return tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    if backend == "jax":
        return keras.distribution.list_devices()
    raise ValueError(f"--distribute is not supported with the {backend} backend "
                     "(use tensorflow or jax)")


@contextlib.contextmanager
def _distribution():
    backend = keras.backend.backend()
    devices = local_devices()
    if backend == "tensorflow":
        import tensorflow as tf
        names = [d.name for d in devices]
        strategy = tf.distribute.MirroredStrategy(names)
        print(f"MirroredStrategy over {len(names)} devices: {', '.join(names)}")
        with strategy.scope():
            yield
        return
    previous = keras.distribution.distribution()
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    print(f"DataParallel over {len(devices)} devices: {', '.join(map(str, devices))}")
    try:
        yield
    finally:
        keras.distribution.set_distribution(previous)


@contextlib.contextmanager
def training_scope(config):
    """Build, compile and fit the model inside this context."""
    previous = keras.config.dtype_policy()
    if config.mixed_precision:
        keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        with _distribution() if config.distribute else contextlib.nullcontext():
            yield
    finally:
        keras.config.set_dtype_policy(previous)


class TimeBudget(keras.callbacks.Callback):
    """Stops training before an epoch that would end after ``seconds``.

    Lets a job fit a fixed slot (a 10-minute GPU lease, one CPU hour): the
    epochs that fit are sized from the longest epoch measured after the
    first (which also compiles). At least one epoch is trained. ``started``
    (a ``time.perf_counter()`` value): the budget counts from then (the start
    of the job, data and model loading included), else from ``fit``'s start.

    ``action="pause"`` (the default): the run is paused, not finished; the
    train job keeps everything and the same command goes on from there
    (``paused_after`` says after which epoch, 1-based; None if it did not pause).
    ``action="finish"``: the run ends there and the best epoch so far is
    evaluated. Either way a killed run resumes instead. It does not claim a stop
    that another callback (an early stop) asked for in the same epoch.
    """

    def __init__(self, seconds, action="pause", started=None):
        super().__init__()
        if action not in ("pause", "finish"):
            raise ValueError(f"action {action!r}: must be pause or finish")
        self.seconds = float(seconds)
        self.action = action
        self.started = started
        self.paused_after = None

    def on_train_begin(self, logs=None):
        self._start = time.perf_counter() if self.started is None else self.started
        self._durations = []
        self.paused_after = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        self._durations.append(now - self._epoch_start)
        if self.model.stop_training or epoch + 1 >= self.params.get("epochs", math.inf):
            return  # another callback ended the run here, or it ends anyway
        # The first epoch also compiles: later epochs estimate the next one better.
        next_epoch = max(self._durations[1:] or self._durations)
        if now - self._start + next_epoch > self.seconds:
            what = ("the run pauses here (the same command goes on)" if self.action == "pause"
                    else "training stops here and the best epoch so far is evaluated")
            print(f"\nTime budget of {self.seconds:.0f} s reached after epoch {epoch + 1}: "
                  f"{what}.")
            self.model.stop_training = True
            if self.action == "pause":
                self.paused_after = epoch + 1
