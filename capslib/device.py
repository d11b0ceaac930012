"""What the current Keras backend runs on (for logs, metrics.json and defaults)."""
import platform

import keras


def has_gpu():
    return device_kind() == "gpu"


def device_kind():
    """'gpu', 'tpu' or 'cpu' for the current backend."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax
        return jax.default_backend()
    if backend == "tensorflow":
        import tensorflow as tf
        return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"
    if backend == "torch":
        import torch
        return "gpu" if torch.cuda.is_available() else "cpu"
    return "cpu"


def device_description():
    """A human-readable name of the device, e.g. 'NVIDIA H200' or the CPU model."""
    backend = keras.backend.backend()
    try:
        if backend == "jax":
            import jax
            dev = jax.devices()[0]
            if dev.platform != "cpu":
                return f"{dev.device_kind} x{len(jax.devices())}"
        elif backend == "tensorflow" and has_gpu():
            import tensorflow as tf
            gpus = tf.config.list_physical_devices("GPU")
            details = tf.config.experimental.get_device_details(gpus[0])
            return f"{details.get('device_name', 'GPU')} x{len(gpus)}"
        elif backend == "torch" and has_gpu():
            import torch
            return f"{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    except Exception:  # a description is nice to have, never worth a crash
        pass
    return f"CPU: {_cpu_model()} ({_cpu_count()} cores)"


def _cpu_count():
    import os
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count()


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
