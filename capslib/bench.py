"""``python -m capslib bench``: images/s of capslib's CapsNet against a naive
reference that follows the original notebook (W tiled per example, one
batched matmul, back-propagation through every routing iteration), same
configuration, same run. Also the float32 peak of this machine (a large
matmul) and the fraction of it that training reaches.
"""
import json
import time

import keras
import numpy as np
from keras import ops

from capslib import device
from capslib.config import TrainConfig
from capslib.layers import DigitCapsules
from capslib.model import CapsNet, build_capsnet, compile_capsnet
from capslib.scale import training_scope


@keras.saving.register_keras_serializable(package="capslib_bench")
class TiledDigitCapsules(DigitCapsules):
    """The original notebook's prediction vectors: W and u tiled per example."""

    def predictions(self, inputs):
        batch = ops.shape(inputs)[0]
        w = ops.tile(ops.expand_dims(self.W, 0), (batch, 1, 1, 1, 1))  # (B, i, j, k, d)
        u = ops.tile(inputs[:, :, None, :, None], (1, 1, self.n_caps, 1, 1))  # (B, i, j, d, 1)
        return ops.squeeze(ops.matmul(w, u), -1)


@keras.saving.register_keras_serializable(package="capslib_bench")
class NaiveCapsNet(CapsNet):
    digit_caps_class = TiledDigitCapsules


def forward_flops_per_image(model):
    """Multiply-adds x 2 of one forward pass (convolutions, u_hat, routing, decoder)."""
    cfg = model.get_config()
    h = cfg["image_shape"][0] - cfg["conv_kernel"] + 1
    c_in = cfg["image_shape"][2]
    flops = 2 * h * h * cfg["conv_filters"] * cfg["conv_kernel"] ** 2 * c_in
    p = (h - cfg["primary_kernel"]) // cfg["primary_strides"] + 1
    primary_channels = cfg["primary_maps"] * cfg["primary_dims"]
    flops += 2 * p * p * primary_channels * cfg["primary_kernel"] ** 2 * cfg["conv_filters"]
    n_in = p * p * cfg["primary_maps"]
    n_out, d_out = cfg["n_classes"], cfg["digit_dims"]
    flops += 2 * n_in * n_out * d_out * cfg["primary_dims"]  # u_hat
    r = cfg["routing_iterations"]
    flops += (2 * r - 1) * 2 * n_in * n_out * d_out  # weighted sums and agreements
    if cfg["decoder"]:
        units = [n_out * d_out, *cfg["decoder_units"], int(np.prod(cfg["image_shape"]))]
        flops += sum(2 * a * b for a, b in zip(units[:-1], units[1:]))
    return flops


def _synthetic(n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, n)
    targets = {"lengths": np.eye(10, dtype=np.float32)[y], "reconstruction": x}
    return {"image": x, "label": y}, targets


def train_images_per_s(model, batch_size, steps):
    x, y = _synthetic(batch_size * steps)
    warm = {k: v[: 2 * batch_size] for k, v in x.items()}
    warm_y = {k: v[: 2 * batch_size] for k, v in y.items()}
    model.fit(warm, warm_y, batch_size=batch_size, epochs=1, verbose=0)  # trace/compile
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, shuffle=False)
    return batch_size * steps / (time.perf_counter() - start)


def infer_images_per_s(model, batch_size, steps):
    x, _ = _synthetic(batch_size * steps, seed=1)
    model.predict(x["image"][: 2 * batch_size], batch_size=batch_size, verbose=0)
    start = time.perf_counter()
    model.predict(x["image"], batch_size=batch_size, verbose=0)
    return batch_size * steps / (time.perf_counter() - start)


def peak_matmul_gflops(n=None, repeats=5):
    """float32 GFLOP/s of a large square matmul with the current backend.

    The product is reduced to a scalar on the device so that only the matmul
    is timed, not a copy of the result to the host.
    """
    if n is None:
        n = 2048 if device.device_kind() == "cpu" else 8192
    rng = np.random.default_rng(0)
    a = ops.convert_to_tensor(rng.random((n, n), dtype=np.float32))
    b = ops.convert_to_tensor(rng.random((n, n), dtype=np.float32))

    def product():
        return float(ops.convert_to_numpy(ops.sum(ops.matmul(a, b))))

    product()  # warm-up
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        product()
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e9


def measure_capsnet(batch_size, routing_iterations=3, steps=20, jit_compile=None,
                    mixed_precision=False):
    """A fresh capslib CapsNet and its training and inference images/s."""
    keras.utils.set_random_seed(0)
    with training_scope(TrainConfig(mixed_precision=mixed_precision)):
        model = compile_capsnet(build_capsnet(routing_iterations=routing_iterations),
                                jit_compile=jit_compile)
        speeds = {"train_images_per_s": train_images_per_s(model, batch_size, steps),
                  "infer_images_per_s": infer_images_per_s(model, batch_size, steps)}
    return model, speeds


def run_benchmark(batch_size=64, routing_iterations=3, steps=20, naive=True, peak=True,
                  jit_compile=None, mixed_precision=False):
    model, speeds = measure_capsnet(batch_size, routing_iterations, steps, jit_compile,
                                    mixed_precision)
    result = {
        "backend": keras.backend.backend(), "device": device.device_description(),
        "batch_size": batch_size, "routing_iterations": routing_iterations,
        "steps": steps, "precision": "mixed_bfloat16" if mixed_precision else "float32",
        **speeds,
    }
    train_flops = 3 * forward_flops_per_image(model)  # backward ~ 2x forward
    result["train_gflop_per_image"] = train_flops / 1e9
    result["gflops_per_s"] = result["train_images_per_s"] * train_flops / 1e9
    if naive:
        reference = NaiveCapsNet(routing_iterations=routing_iterations,
                                 stop_inner_gradients=False)
        reference.build((None, 28, 28, 1))
        compile_capsnet(reference, jit_compile=jit_compile)
        result["naive_train_images_per_s"] = train_images_per_s(reference, batch_size, steps)
        result["train_speedup"] = result["train_images_per_s"] / result["naive_train_images_per_s"]
    if peak:
        result["peak_matmul_gflops_per_s"] = peak_matmul_gflops()
        result["fraction_of_peak"] = result["gflops_per_s"] / result["peak_matmul_gflops_per_s"]
    return result


def sweep_batch_sizes(batch_sizes, routing_iterations=3, steps=20):
    """Training and inference images/s of capslib's model for each batch size."""
    rows = []
    for batch_size in batch_sizes:
        _, speeds = measure_capsnet(batch_size, routing_iterations, steps)
        rows.append({"batch_size": batch_size, **speeds})
        keras.backend.clear_session()
    return rows


def print_report(result, as_json=False):
    print(f"backend {result['backend']} on {result['device']}, batch {result['batch_size']}, "
          f"{result['routing_iterations']} routing iterations, {result['precision']}, "
          f"{result['steps']} timed steps")
    print(f"  capslib training : {result['train_images_per_s']:8.1f} images/s "
          f"({result['gflops_per_s']:.1f} GFLOP/s at {result['train_gflop_per_image']:.2f} "
          "GFLOP per image)")
    if "naive_train_images_per_s" in result:
        print(f"  naive training   : {result['naive_train_images_per_s']:8.1f} images/s "
              f"(capslib is {result['train_speedup']:.2f}x)")
    print(f"  capslib inference: {result['infer_images_per_s']:8.1f} images/s")
    if "peak_matmul_gflops_per_s" in result:
        print(f"  float32 matmul peak: {result['peak_matmul_gflops_per_s']:.1f} GFLOP/s; "
              f"training reaches {100 * result['fraction_of_peak']:.0f}% of it")
    for row in result.get("sweep", []):
        print(f"  batch {row['batch_size']:5d}: training {row['train_images_per_s']:9.1f} images/s,"
              f" inference {row['infer_images_per_s']:9.1f} images/s")
    if as_json:
        print(json.dumps(result))
