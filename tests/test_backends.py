"""capslib under the JAX backend with TensorFlow made unimportable, as on a
GPU machine that has JAX and no TensorFlow."""
import json
import os
import subprocess
import sys

import pytest

WITHOUT_TENSORFLOW = r"""
import sys
sys.modules["tensorflow"] = None  # any `import tensorflow` now raises ImportError
import json, keras, numpy as np
from capslib.data import CapsuleDataset, augment_batch, load_fashion_mnist
from capslib.model import build_capsnet, compile_capsnet

(x, y), _ = load_fashion_mnist()
data = CapsuleDataset(x[:4], y[:4], batch_size=4, augment=True)
model = compile_capsnet(build_capsnet())
history = model.fit(data, epochs=1, verbose=0)
model.save("/tmp/capslib-jax-check.keras")
restored = keras.saving.load_model("/tmp/capslib-jax-check.keras", safe_mode=True)
same = np.array_equal(model.predict(x[:2], verbose=0)["lengths"],
                      restored.predict(x[:2], verbose=0)["lengths"])
print(json.dumps({"backend": keras.backend.backend(), "loss": history.history["loss"][0],
                  "same": bool(same)}))
"""


@pytest.mark.heavy
def test_jax_backend_needs_no_tensorflow(tmp_path):
    pytest.importorskip("jax")
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    done = subprocess.run([sys.executable, "-c", WITHOUT_TENSORFLOW], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["backend"] == "jax" and result["same"]
    assert result["loss"] > 0
