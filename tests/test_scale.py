"""Data-parallel training on two logical CPU devices gives the loss of one device."""
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from capslib.config import TrainConfig
from capslib.model import build_capsnet, compile_capsnet
from capslib.scale import TimeBudget, training_scope

TWO_DEVICES = r"""
import json, os
backend = os.environ["KERAS_BACKEND"]
if backend == "tensorflow":
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
import numpy as np
from capslib.config import TrainConfig
from capslib.model import build_capsnet, compile_capsnet
from capslib.scale import local_devices, training_scope

rng = np.random.default_rng(0)
x = rng.random((8, 28, 28, 1), dtype=np.float32)
y = rng.integers(0, 10, 8)
inputs = {"image": x, "label": y}
targets = {"lengths": np.eye(10, dtype=np.float32)[y], "reconstruction": x}
keras.utils.set_random_seed(0)
weights = build_capsnet().get_weights()

def step(distribute):
    with training_scope(TrainConfig(distribute=distribute)):
        model = build_capsnet()
        model.set_weights(weights)
        compile_capsnet(model, learning_rate=1e-3, lr_decay=1.0)
        fit = model.fit(inputs, targets, batch_size=8, epochs=1, shuffle=False, verbose=0)
        after = model.evaluate(inputs, targets, batch_size=8, verbose=0, return_dict=True)
    return fit.history["loss"][0], after["loss"]

single, multi = step(False), step(True)
print(json.dumps({"devices": len(local_devices()), "single": single, "multi": multi}))
"""


def test_two_devices_match_one():
    backend = keras.backend.backend()  # each backend's CI session tests its own API
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    done = subprocess.run([sys.executable, "-c", TWO_DEVICES], env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["devices"] == 2
    # Same loss before the step (the fit's) and after one step on the same batch.
    np.testing.assert_allclose(result["multi"], result["single"], rtol=1e-4)


@pytest.mark.heavy
def test_mixed_precision_keeps_routing_and_losses_float32():
    with training_scope(TrainConfig(mixed_precision=True)):
        model = build_capsnet()
        compile_capsnet(model)
    assert keras.config.dtype_policy().name == "float32"  # restored afterwards
    assert model.conv1.compute_dtype == "bfloat16"
    assert model.digit_caps.compute_dtype == "float32"
    assert model.lengths.compute_dtype == "float32"
    x = np.random.default_rng(0).random((2, 28, 28, 1), dtype=np.float32)
    out = model(x)
    assert keras.backend.standardize_dtype(out["lengths"].dtype) == "float32"
    targets = {"lengths": np.eye(10, dtype=np.float32)[[1, 2]], "reconstruction": x}
    history = model.fit({"image": x, "label": np.array([1, 2])}, targets, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_time_budget_stops_before_an_epoch_would_overrun():
    budget = TimeBudget(seconds=0.0)
    model = compile_capsnet(build_capsnet(decoder=False))
    x = np.zeros((2, 28, 28, 1), "float32")
    targets = {"lengths": np.eye(10, dtype=np.float32)[[0, 1]]}
    history = model.fit({"image": x}, targets, epochs=5, verbose=0, callbacks=[budget])
    assert len(history.history["loss"]) == 1
