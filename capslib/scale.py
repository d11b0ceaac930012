"""Where training runs: mixed precision and several devices (filled in by issue 4)."""
import contextlib

import keras


@contextlib.contextmanager
def training_scope(config):
    """Build and compile the model inside this context."""
    previous = keras.config.dtype_policy()
    if config.mixed_precision:
        keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
