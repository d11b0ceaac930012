"""The short measurement behind ``capslib.estimate``: a few timed training and inference
steps of a recipe's model on synthetic images. Run as a program, in a child process
(``python -m capslib.estimate_probe '<config as JSON>'`` prints one JSON line), so that the
job's own random state and memory stay as they were; ``capslib.estimate.measure_in_child``
starts it. Its own module because it builds models the way ``capslib.train`` does, and
``train`` is what announces the estimate.
"""
import json
import sys
import time

from capslib.estimate import MEASURED_INFER_STEPS, MEASURED_TRAIN_STEPS


def measure(config, train_steps=MEASURED_TRAIN_STEPS, infer_steps=MEASURED_INFER_STEPS):
    """Training and inference images/s of ``config``'s model, here, on synthetic images.

    Runs in this process (``measure_in_child`` is what the job calls)."""
    import keras
    import numpy as np

    from capslib import data, scale
    from capslib.train import _targets, build_for_config

    batch = config.batch_size
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    n = batch * max(train_steps, infer_steps)
    images = rng.random((n, 28, 28, 1), dtype=np.float32)
    labels = rng.integers(0, 10, n)

    def batches(count):
        return data.CapsuleDataset(images[:batch * count], labels[:batch * count],
                                   batch_size=batch, shuffle=False, augment=config.augment,
                                   max_shift=config.max_shift, flip=config.flip,
                                   targets=_targets(config))

    with scale.training_scope(config):
        model = build_for_config(config, steps_per_epoch=train_steps)
        model.fit(batches(1), epochs=1, verbose=0, shuffle=False)  # traces the graph
        start = time.perf_counter()
        model.fit(batches(train_steps), epochs=1, verbose=0, shuffle=False)
        train_speed = batch * train_steps / (time.perf_counter() - start)
        model.predict(images[:batch], batch_size=batch, verbose=0)
        start = time.perf_counter()
        model.predict(images[:batch * infer_steps], batch_size=batch, verbose=0)
        infer_speed = batch * infer_steps / (time.perf_counter() - start)
    return {"train_images_per_s": train_speed, "infer_images_per_s": infer_speed}


if __name__ == "__main__":  # the child of capslib.estimate.measure_in_child: one JSON line
    from capslib.config import TrainConfig
    print(json.dumps(measure(TrainConfig(**json.loads(sys.argv[1])))))
