"""The main job: train on the validation split, select the best epoch on
validation loss, evaluate the test set once, write ``metrics.json`` and figures.

A run lives in one folder (``runs/capsnet`` by default)::

    config.json      the recipe (a resumed run must use the same one)
    log.csv          one row per epoch (losses, accuracies, images/s, learning rate)
    backup/          the last finished epoch (weights + optimizer), for resuming
    best.keras       the model of the best epoch so far (lowest val_loss)
    metrics.json     written once, at the end, with the test result
    learning_curves.png, reconstructions.png

Interrupt it at any time and run the same command again: it goes on from
the last finished epoch. A finished run is not trained or evaluated again.
"""
import csv
import json
import time
from pathlib import Path

import keras
import numpy as np

from capslib import data, device, scale, viz
from capslib.config import TrainConfig, config_for_profile
from capslib.model import build_capsnet, compile_capsnet

DEFAULT_RUN_DIR = Path("runs") / "capsnet"
# Settings that may differ when a run is resumed (more epochs, another device).
_RESUMABLE_CHANGES = {"epochs", "distribute", "time_budget_s"}


class ThroughputLogger(keras.callbacks.Callback):
    """Adds training images/s and the learning rate to each epoch's logs."""

    def __init__(self, n_train_images):
        super().__init__()
        self.n_train_images = n_train_images
        self._start = None
        self._train_seconds = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._train_seconds = time.perf_counter(), None

    def on_test_begin(self, logs=None):
        # Validation starts: the training part of the epoch is over.
        if self._start is not None and self._train_seconds is None:
            self._train_seconds = time.perf_counter() - self._start

    def on_epoch_end(self, epoch, logs=None):
        seconds = self._train_seconds or (time.perf_counter() - self._start)
        logs["train_images_per_s"] = self.n_train_images / seconds
        logs["epoch_seconds"] = time.perf_counter() - self._start
        lr = self.model.optimizer.learning_rate
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(lr))


def read_log(path):
    """The CSV log as a dict of lists (last row wins for a repeated epoch)."""
    path = Path(path)
    if not path.exists():
        return {}
    rows = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            rows[int(row["epoch"])] = row
    history = {}
    for epoch in sorted(rows):
        for key, value in rows[epoch].items():
            history.setdefault(key, []).append(float(value) if value not in ("", None) else np.nan)
    return history


def prepare_data(config, data_dir=None):
    """Train / validation / test arrays for ``config`` (split before limiting)."""
    (x_train, y_train), (x_test, y_test) = data.load_fashion_mnist(data_dir)
    (x_tr, y_tr), (x_val, y_val) = data.split_train_val(
        x_train, y_train, val_size=config.val_size, seed=config.seed)
    if config.train_limit:
        x_tr, y_tr = x_tr[:config.train_limit], y_tr[:config.train_limit]
    if config.test_limit:
        x_test, y_test = x_test[:config.test_limit], y_test[:config.test_limit]
    return (x_tr, y_tr), (x_val, y_val), (x_test, y_test)


def _check_config(run_dir, config):
    path = run_dir / "config.json"
    if path.exists():
        saved = json.loads(path.read_text())
        current = config.to_dict()
        differs = {k for k in current if saved.get(k) != current[k]} - _RESUMABLE_CHANGES
        if differs:
            details = ", ".join(f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in sorted(differs))
            raise ValueError(
                f"{run_dir} holds a run with another recipe ({details}). "
                "Use another --run-dir, or delete that folder to start over.")
    path.write_text(json.dumps(config.to_dict(), indent=2) + "\n")


def _best_val_loss(history):
    losses = [v for v in history.get("val_loss", []) if np.isfinite(v)]
    return min(losses) if losses else None


def evaluate_model(model, x, y, batch_size=100):
    """Accuracy, per-class accuracy, confusion matrix and inference images/s."""
    data.CapsuleDataset(x, y, batch_size=batch_size)  # validates the arrays
    start = time.perf_counter()
    lengths = model.predict(x, batch_size=batch_size, verbose=0)["lengths"]
    seconds = time.perf_counter() - start
    pred = np.argmax(lengths, axis=1)
    n_classes = lengths.shape[1]
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (y, pred), 1)
    per_class = cm.diagonal() / np.maximum(cm.sum(axis=1), 1)
    return {
        "accuracy": float(np.mean(pred == y)),
        "per_class_accuracy": {data.CLASS_NAMES[k]: float(per_class[k]) for k in range(n_classes)},
        "confusion_matrix": cm.tolist(),
        "images_per_s": len(x) / seconds,
        "predictions": pred,
    }


def train(config=None, run_dir=DEFAULT_RUN_DIR, data_dir=None, verbose="auto",
          callbacks=()):
    """Run (or resume) the training job in ``run_dir``; return the metrics dict."""
    config = config or config_for_profile()
    run_dir = Path(run_dir)
    metrics_path = run_dir / "metrics.json"
    run_dir.mkdir(parents=True, exist_ok=True)
    _check_config(run_dir, config)
    if metrics_path.exists():
        print(f"{run_dir} is finished (the test set was evaluated once already); "
              f"its metrics: {metrics_path}")
        return json.loads(metrics_path.read_text())

    keras.utils.set_random_seed(config.seed)
    (x_tr, y_tr), (x_val, y_val), (x_test, y_test) = prepare_data(config, data_dir)
    train_data = data.CapsuleDataset(
        x_tr, y_tr, batch_size=config.batch_size, shuffle=True, augment=config.augment,
        max_shift=config.max_shift, flip=config.flip, seed=config.seed)
    val_data = data.CapsuleDataset(x_val, y_val, batch_size=config.batch_size, shuffle=False)

    log_path = run_dir / "log.csv"
    history = read_log(log_path)
    done_epochs = len(history.get("loss", []))
    if done_epochs:
        print(f"Resuming {run_dir} after epoch {done_epochs} of {config.epochs}.")
    fit_callbacks = [
        ThroughputLogger(len(x_tr)),
        keras.callbacks.CSVLogger(str(log_path), append=True),
        keras.callbacks.ModelCheckpoint(
            str(run_dir / "best.keras"), monitor="val_loss", save_best_only=True,
            initial_value_threshold=_best_val_loss(history)),
        keras.callbacks.BackupAndRestore(str(run_dir / "backup"), double_checkpoint=True),
        *callbacks,
    ]
    if config.time_budget_s:
        fit_callbacks.append(scale.TimeBudget(config.time_budget_s))
    start = time.perf_counter()
    with scale.training_scope(config):
        model = build_capsnet(routing_iterations=config.routing_iterations)
        compile_capsnet(model, config.learning_rate, config.lr_decay,
                        steps_per_epoch=len(train_data),
                        reconstruction_weight=config.reconstruction_weight)
        model.fit(train_data, validation_data=val_data, epochs=config.epochs,
                  callbacks=fit_callbacks, verbose=verbose)
    fit_seconds = time.perf_counter() - start
    history = read_log(log_path)

    # Model selection is done: the test set is touched once, with the best model.
    best = keras.saving.load_model(run_dir / "best.keras", safe_mode=True, compile=False)
    val = evaluate_model(best, x_val, y_val, config.batch_size)
    test = evaluate_model(best, x_test, y_test, config.batch_size)
    best_epoch = int(np.nanargmin(history["val_loss"])) + 1
    metrics = {
        "val_accuracy": val["accuracy"],
        "test_accuracy": test["accuracy"],
        "per_class_accuracy": test["per_class_accuracy"],
        "confusion_matrix": test["confusion_matrix"],
        "best_epoch": best_epoch,
        "epochs": len(history["loss"]),
        "parameters": int(best.count_params()),
        "train_images_per_s": float(np.nanmedian(history["train_images_per_s"])),
        "infer_images_per_s": test["images_per_s"],
        "fit_seconds_this_session": fit_seconds,
        "n_train": len(x_tr), "n_val": len(x_val), "n_test": len(x_test),
        "backend": keras.backend.backend(),
        "keras_version": keras.__version__,
        "device": device.device_description(),
        "config": config.to_dict(),
    }
    _save_figures(run_dir, history, best, x_test, y_test, test["predictions"])
    metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"validation accuracy {metrics['val_accuracy']:.4f} (best epoch {best_epoch}), "
          f"test accuracy {metrics['test_accuracy']:.4f}; written to {metrics_path}")
    return metrics


def _save_figures(run_dir, history, model, x_test, y_test, pred, n=10):
    viz.save(viz.plot_learning_curves(history), run_dir / "learning_curves.png")
    recon = model.predict(x_test[:n], verbose=0)["reconstruction"]
    viz.save(viz.plot_reconstructions(x_test[:n], recon, y_test[:n], pred[:n]),
             run_dir / "reconstructions.png")


def evaluate(model_path, config=None, data_dir=None):
    """Test metrics of a saved model (the CLI prints them as JSON)."""
    config = config or config_for_profile()
    model = keras.saving.load_model(model_path, safe_mode=True, compile=False)
    _, _, (x_test, y_test) = prepare_data(config, data_dir)
    result = evaluate_model(model, x_test, y_test, config.batch_size)
    result.pop("predictions")
    return result


__all__ = ["TrainConfig", "train", "evaluate", "evaluate_model", "read_log", "prepare_data"]
