"""The main job: train on the validation split, select the best epoch on
validation loss, evaluate the test set once, write ``metrics.json`` and figures.

A run lives in one folder (``runs/capsnet`` by default)::

    config.json      the recipe (a resumed run must use the same one; state.json keeps it too)
    state.json       where the run stands: epochs kept, best epoch, the log's rows, the
                     recipe, the SHA-256 of each model file, the Keras backends used
    log.csv          one row per epoch (losses, accuracies, images/s, learning rate)
    backup/          the last kept epoch and the best one (model + optimizer), until
                     metrics.json exists
    best.keras       a copy of the best epoch so far (lowest val_loss; never a link)
    metrics.json     written once, at the end, with the test result
    learning_curves.png, reconstructions.png
    .lock            held by the job using the folder (a second job is refused)

Interrupt it at any time (Ctrl-C, SIGTERM, a kill, a full disk) and run the same
command again: it goes on from the step that was interrupted, and a seeded
run ends as it would have without the interruption (``capslib.runs`` says
how). A session's time budget (``time_budget_s``) pauses the run the same way,
after the last epoch that fits, without evaluating the test set. The run ends
(and the test set is evaluated, once) when its epochs are done, or earlier when
``patience`` epochs in a row did not lower the validation loss (an early stop,
kept in state.json and log.csv's ``stopped_early`` column). A finished run is not
trained or evaluated again.
"""
import math
import sys
import time
import warnings
from pathlib import Path

import keras
import numpy as np

from capslib import data, device, scale, viz
from capslib.baseline import build_baseline, class_scores, compile_baseline
from capslib.config import ConfigError, TrainConfig, config_for_profile, setting_name
from capslib.loading import load_capsnet, load_classifier
from capslib.model import ModelFileError, build_capsnet, compile_capsnet
from capslib.runs import (EpochCheckpoint, RunError, RunFolder, StateDamaged,
                          StopOnSignal, atomic_path, check_interrupted, interrupt_handling,
                          os_error, read_log, shown_path, weights_finite, write_json_atomic)

DEFAULT_RUN_DIR = Path("runs") / "capsnet"
# Settings that may differ when a run is resumed (more epochs, another device).
# A session's budget and the early stop's patience end training, not change an epoch.
_RESUMABLE_CHANGES = {"epochs", "distribute", "time_budget_s", "time_budget_action", "patience"}
# Settings that leave no trace a run folder can check without its recipe (config.json
# and state.json both gone): a changed one cannot be detected then.
_UNPROVABLE = ("train_limit", "augment", "test_limit", "mixed_precision")


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


class DatasetEpochSync(keras.callbacks.Callback):
    """Sets the training data to the epoch ``fit`` is at.

    The dataset's own counter restarts at 0 in a new process; this way a
    resumed run draws the order and augmentation of an uninterrupted one.
    """

    def __init__(self, dataset):
        super().__init__()
        self.dataset = dataset

    def on_epoch_begin(self, epoch, logs=None):
        self.dataset.set_epoch(epoch)


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


def _check_recipe(run, config, state=None, metrics=None):
    """The recipe must be the run's: as config.json, state.json and metrics.json say
    (deleting config.json does not change it)."""
    sources = [run.read_json(run.config_path, "the recipe of this run"),
               state.recipe if state else None,
               (metrics or {}).get("config") if isinstance(metrics, dict) else None]
    current = config.to_dict()
    defaults = TrainConfig().to_dict()  # a setting added since the run began has its default
    for saved in sources:
        if not isinstance(saved, dict):
            continue
        differs = {k for k in current if saved.get(k, defaults[k]) != current[k]}
        differs -= _RESUMABLE_CHANGES
        if differs:
            details = ", ".join(f"{k}: {saved.get(k, defaults[k])!r} -> {current[k]!r}"
                                for k in sorted(differs))
            raise ConfigError(
                f"{run.path} holds a run with another recipe ({details}). "
                f"Use another {run.flag}, or delete that folder to start over.")


def _check_logged_learning_rates(run, config, state):
    """A rebuilt state has no recipe: log.csv's learning rates still tell the
    rate and decay the run used (after epoch e: rate x decay^e)."""
    if state.recipe:
        return
    for row in state.history:
        logged = row.get("learning_rate")
        if not isinstance(logged, float) or not math.isfinite(logged):
            continue
        expected = config.learning_rate * config.lr_decay ** (row["epoch"] + 1)
        if not math.isclose(logged, expected, rel_tol=1e-3):
            raise ConfigError(
                f"{run.path} holds a run with another recipe: log.csv's learning rate after "
                f"epoch {row['epoch'] + 1} is {logged:.6g}, but {setting_name('learning_rate')} "
                f"{config.learning_rate:g} and {setting_name('lr_decay')} {config.lr_decay:g} "
                f"give {expected:.6g}. Use the run's settings, another {run.flag}, or delete "
                "that folder to start over.")


def _check_logged_validation(run, config, state, val, steps_per_epoch):
    """Neither config.json nor state.json holds the recipe: the last backup must
    score on this recipe's validation split what log.csv logged for its epoch
    (True: it does; False: no epoch kept yet, nothing to check).
    Another --seed or --val-size draws another split, and the model's settings
    must fit the backup, so such a change cannot resume unnoticed. Compared: the
    total loss and the accuracy (the same under every backend; the per-output
    losses are averaged differently by TensorFlow and JAX)."""
    row = next((r for r in state.history if r["epoch"] == state.epochs_done - 1), {})
    logged = {k[len("val_"):]: v for k, v in row.items() if k.startswith("val_")
              and (k == "val_loss" or k.endswith("accuracy"))
              and isinstance(v, float) and math.isfinite(v)}
    if not state.backup or not logged:
        return False  # nothing kept yet: nothing to check
    val_data = data.CapsuleDataset(*val, batch_size=config.batch_size, shuffle=False,
                                   targets=_targets(config))
    with scale.training_scope(config), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a model that does not fit the backup is refused below
        model = build_for_config(config, steps_per_epoch=steps_per_epoch)
        try:
            _restore(model, run.path / state.backup)
        except RunError as e:
            if run.check_model_file(state.backup, state.epochs_done, steps_per_epoch,
                                    state.sha256.get(state.backup)):
                raise  # the file itself is damaged
            raise ConfigError(f"{run.path} holds a run with another recipe: config.json and "
                              f"state.json are gone, and this recipe's model does not fit "
                              f"{state.backup} ({str(e)[:160]}). Use the run's settings, "
                              f"another {run.flag}, or delete that folder to start over.") from None
        measured = model.evaluate(val_data, verbose=0, return_dict=True,
                                  callbacks=[StopOnSignal()])
    differ = {k: (v, measured[k]) for k, v in logged.items() if k in measured
              and not math.isclose(measured[k], v, rel_tol=1e-3, abs_tol=1e-5)}
    if differ:
        details = ", ".join(f"val_{k} {was:.6g} logged, {now:.6g} now"
                            for k, (was, now) in sorted(differ.items()))
        raise ConfigError(
            f"{run.path} holds a run with another recipe: config.json and state.json are "
            f"gone, and {state.backup} does not score on this recipe's validation split what "
            f"log.csv logged for epoch {state.epochs_done} ({details}); another "
            f"{setting_name('seed')} or {setting_name('val_size')} draws another split. Use "
            f"the run's settings, another {run.flag}, or delete that folder to start over.")
    return True


def _check_finished(run, config, metrics):
    planned = metrics.get("config", {}).get("epochs", config.epochs)
    if config.epochs != planned:
        raise ConfigError(
            f"{setting_name('epochs')} {config.epochs}: {run.path} is finished ({planned} epochs "
            f"planned, {metrics.get('epochs')} trained) and its test set was evaluated; it is "
            "not extended, which would evaluate the test set a second time. Use another "
            f"{run.flag} for a longer run.")


def evaluate_model(model, x, y, batch_size=100):
    """Accuracy, per-class accuracy, confusion matrix and inference images/s."""
    data.CapsuleDataset(x, y, batch_size=batch_size)  # validates the arrays
    start = time.perf_counter()
    scores = class_scores(model.predict(x, batch_size=batch_size, verbose=0,
                                        callbacks=[StopOnSignal()]))
    seconds = time.perf_counter() - start
    pred = np.argmax(scores, axis=1)
    n_classes = scores.shape[1]
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
          callbacks=(), flag="--run-dir", announce_time=False):
    """Run (or resume) the training job in ``run_dir``; return the metrics dict, or
    None when ``config.time_budget_s`` paused the run (call it again to go on).

    Raises ``ConfigError`` (a setting out of range, another recipe), before
    anything is written, and ``RunError`` (folder in use, damaged, unwritable,
    disk full, training diverged). ``flag``: the option naming the folder, for
    messages (the experiment's is --runs-dir). ``announce_time``: under the full
    profile, say how long the run will take before training (``capslib.estimate``;
    the command line's default).
    """
    started = time.perf_counter()  # the time budget counts from here
    config = (config or config_for_profile()).validate()
    run = RunFolder(run_dir, flag=flag)
    # Ctrl-C stops it at every step, also where Keras or JAX swallow it; the folder is
    # left whole and resumes (the command line handles SIGTERM alike).
    with interrupt_handling(sigterm=False), run.lock():
        try:
            return _train(run, config, data_dir, verbose, callbacks, started, announce_time)
        except OSError as e:  # one line naming the path (a full disk is DiskFull already)
            raise os_error(e, run.path, flag) from e


def _train(run, config, data_dir, verbose, callbacks, started=None, announce_time=False):
    metrics = run.read_json(run.metrics_path, "the results of this run")
    try:
        state, damage = run.read_state(), None
    except StateDamaged as e:
        state, damage = None, str(e)
    _check_recipe(run, config, state, metrics)
    if metrics is not None:
        _check_finished(run, config, metrics)
        if run.backup_dir.exists():
            run.remove_backup()  # in case the job was stopped just after metrics.json
        _warn_if_best_changed(run, state)
        print(f"{shown_path(run.path)} is finished (the test set was evaluated once already); "
              f"its metrics: {shown_path(run.metrics_path)}")
        return metrics
    if state is not None:
        contradiction = run.contradiction(state, config.epochs)
        if contradiction:  # rebuilt from what the folder proves, never a silent retrain
            state, damage = None, contradiction
    if state is not None:
        _check_epochs(run, config, state)

    keras.utils.set_random_seed(config.seed)
    (x_tr, y_tr), (x_val, y_val), (x_test, y_test) = prepare_data(config, data_dir)
    steps_per_epoch = math.ceil(len(x_tr) / config.batch_size)
    # Every file the state names is checked before anything is removed or rewritten.
    if state is None:
        state = run.rebuild_state(steps_per_epoch, damage, announce=False)
        _check_logged_learning_rates(run, config, state)
        _check_epochs(run, config, state)
    recipe_from_log = False
    if not state.recipe and not run.config_path.exists():
        # Before verify(), which may write best.keras: a refusal changes nothing.
        recipe_from_log = _check_logged_validation(run, config, state, (x_val, y_val),
                                                   steps_per_epoch)
    if run.rebuild_note:  # said once the recipe is known to be the run's
        print(run.rebuild_note, file=sys.stderr)
    if recipe_from_log:
        print(f"{run.path}: config.json and state.json are gone; log.csv and the last backup "
              "confirm the learning rate, batch size, seed, validation split and model, but not "
              f"{', '.join(setting_name(k) for k in _UNPROVABLE)}: give the run's own.",
              file=sys.stderr)
    run.verify(state, steps_per_epoch)
    state.recipe = {**(state.recipe or {}), **config.to_dict()}
    backend = keras.backend.backend()
    if state.backends and state.backends[-1] != backend:
        print(f"{run.path}: trained with {state.backends[-1]} so far; it goes on with "
              f"{backend} (metrics.json names both).")
    if not state.backends or state.backends[-1] != backend:
        state.backends.append(backend)
    write_json_atomic(run.config_path, config.to_dict())
    run.write_state(state)
    run.sync_with_state(state)  # repairs what an interruption left half done

    fit_seconds = 0.0
    trains_on = state.epochs_done < config.epochs and not state.stopped_early
    if trains_on and _patience_reached(state, config.patience):  # a lower --patience
        print(f"{run.path}: {_no_lower_loss(state, config.patience)}: training ends here.")
        _record_early_stop(run, state)
        trains_on = False
    if trains_on:
        if state.epochs_done:
            print(f"Resuming {run.path} after epoch {state.epochs_done} of {config.epochs}.")
        if announce_time:  # here: the folder, recipe and data are checked, the lock is held
            from capslib import estimate
            estimate.announce(config, state.history, state.epochs_done, len(x_tr), len(x_val))
        start = time.perf_counter()
        paused = _fit(run, state, config, (x_tr, y_tr), (x_val, y_val), verbose, callbacks,
                      started=started)
        fit_seconds = time.perf_counter() - start
        if paused:  # kept as after a kill between epochs: nothing marks the run ended
            print(f"paused after epoch {state.epochs_done} of {config.epochs}: run the same "
                  f"command to go on (best epoch so far {state.best_epoch}; {run.path} keeps "
                  "everything, and the test set is evaluated once, when the run ends).")
            return None
    else:
        print(f"{run.path}: training is done ({state.epochs_done} epochs); evaluating the "
              "best epoch.")

    # Model selection is done: the test set is touched once, with the best model.
    if state.best_epoch is None:
        raise RunError(f"No epoch of {run.path} ended with a finite validation loss (training "
                       "diverged): there is no model to evaluate. Start a new run with a lower "
                       f"{setting_name('learning_rate')}.")
    # best.keras may have been written over while the job ran: checked against its
    # checksum (rebuilt from its backup if it changed) before it is evaluated.
    run.verify(state, steps_per_epoch)
    run.write_state(state)
    try:
        best = load_classifier(run.best_path)
    except ModelFileError as e:
        raise RunError(f"{e}. Restore it, or move the folder {run.path} away to start "
                       "over.") from None
    if not weights_finite(best):  # never evaluate (nor select) a diverged model
        raise RunError(f"{run.best_path}: its weights are not finite (NaN or infinite); it "
                       f"cannot be evaluated. Start a new run with a lower "
                       f"{setting_name('learning_rate')} (another {run.flag}).")
    val = evaluate_model(best, x_val, y_val, config.batch_size)
    test = evaluate_model(best, x_test, y_test, config.batch_size)
    history = _columns(state.history)
    metrics = {
        "val_accuracy": val["accuracy"],
        "test_accuracy": test["accuracy"],
        "per_class_accuracy": test["per_class_accuracy"],
        "confusion_matrix": test["confusion_matrix"],
        "model": config.model,
        "best_epoch": state.best_epoch,
        "epochs": state.epochs_done,
        "parameters": int(best.count_params()),
        "train_images_per_s": float(np.nanmedian(history["train_images_per_s"])),
        "infer_images_per_s": test["images_per_s"],
        "fit_seconds_this_session": fit_seconds,
        "ended": _how_it_ended(state, config),
        "n_train": len(x_tr), "n_val": len(x_val), "n_test": len(x_test),
        "backend": keras.backend.backend(),
        "backends": list(state.backends),  # every backend that trained this run, in order
        "keras_version": keras.__version__,
        "device": device.device_description(),
        "config": config.to_dict(),
    }
    _save_figures(run.path, history, best, x_test, y_test, test["predictions"])
    write_json_atomic(run.metrics_path, metrics)  # from here on the run is finished
    run.remove_backup()
    state.backup = None
    run.write_state(state)
    print(f"validation accuracy {metrics['val_accuracy']:.4f} (best epoch {state.best_epoch}), "
          f"test accuracy {metrics['test_accuracy']:.4f}; written to {shown_path(run.metrics_path)}")
    return metrics


def _patience_reached(state, patience):
    """Whether ``patience`` epochs in a row after the best one did not lower val_loss."""
    return bool(patience and state.best_epoch
                and state.epochs_done - state.best_epoch >= patience)


def _no_lower_loss(state, patience):
    return (f"no lower validation loss in the {state.epochs_done - state.best_epoch} epochs "
            f"after epoch {state.best_epoch} ({setting_name('patience')} {patience})")


def _how_it_ended(state, config):
    """metrics.json's ``ended``: why training ended where it did."""
    if not state.stopped_early or state.epochs_done >= config.epochs:
        return "epochs done"
    if _patience_reached(state, config.patience):
        return f"early stop: {_no_lower_loss(state, config.patience)}"
    if config.time_budget_s and config.time_budget_action == "finish":
        return "stopped early: time budget (--time-budget-action finish)"
    return "stopped early"


def _record_early_stop(run, state):
    """Training ended for good before --epochs: state.json and log.csv say so (a state
    rebuilt from the folder does not train on)."""
    state.stopped_early = True
    for row in state.history:
        row["stopped_early"] = int(row is state.history[-1])
    run.write_state(state)
    run.write_log(state.history)


class EarlyStop(keras.callbacks.Callback):
    """Ends training when ``patience`` epochs in a row did not lower val_loss.

    Counted from the run's state (its best epoch), not from this session: a
    paused or interrupted run stops where an uninterrupted one would.
    """

    def __init__(self, state, patience):
        super().__init__()
        self.state, self.patience = state, patience

    def on_epoch_end(self, epoch, logs=None):
        if (_patience_reached(self.state, self.patience)
                and epoch + 1 < self.params.get("epochs", math.inf)):
            print(f"\nEarly stop after epoch {epoch + 1}: "
                  f"{_no_lower_loss(self.state, self.patience)}.")
            self.model.stop_training = True


def _check_epochs(run, config, state):
    if state.epochs_done > config.epochs:
        raise ConfigError(
            f"{setting_name('epochs')} {config.epochs}: {run.path} has trained "
            f"{state.epochs_done} epochs already; ask for at least {state.epochs_done}.")


def _warn_if_best_changed(run, state):
    """A finished run's best.keras changed since it was evaluated: say so, once."""
    recorded = state.sha256.get(run.best_path.name) if state else None
    if not recorded or not run.best_path.is_file():
        return
    from capslib.data import file_sha256
    if file_sha256(run.best_path) != recorded:
        print(f"warning: {run.best_path} is not the model this run evaluated (its checksum "
              "differs from state.json's); metrics.json describes the original.")


def _targets(config):
    if config.model == "baseline":
        return ("probabilities",)
    return ("lengths", "reconstruction") if config.decoder else ("lengths",)


def build_for_config(config, steps_per_epoch=None):
    """The model ``config`` names (CapsNet or baseline CNN), built and compiled."""
    if config.model == "baseline":
        return compile_baseline(build_baseline(), config.learning_rate, config.lr_decay,
                                steps_per_epoch=steps_per_epoch)
    model = build_capsnet(routing_iterations=config.routing_iterations, decoder=config.decoder)
    return compile_capsnet(model, config.learning_rate, config.lr_decay,
                           steps_per_epoch=steps_per_epoch,
                           reconstruction_weight=config.reconstruction_weight)


def _fit(run, state, config, train, val, verbose, callbacks, started=None):
    """Train on from ``state``; the epoch after which the time budget paused it (None:
    training ended, at --epochs or for good before)."""
    targets = _targets(config)
    train_data = data.CapsuleDataset(
        *train, batch_size=config.batch_size, shuffle=True, augment=config.augment,
        max_shift=config.max_shift, flip=config.flip, seed=config.seed, targets=targets)
    val_data = data.CapsuleDataset(*val, batch_size=config.batch_size, shuffle=False,
                                   targets=targets)
    fit_callbacks = [
        StopOnSignal(),
        ThroughputLogger(len(train[0])),
        DatasetEpochSync(train_data),
        EpochCheckpoint(run, state),  # before the user's callbacks: they see a kept epoch
    ]
    if config.patience:
        fit_callbacks.append(EarlyStop(state, config.patience))
    fit_callbacks.extend(callbacks)
    budget = None
    if config.time_budget_s:  # last: it leaves a stop another callback asked for alone
        budget = scale.TimeBudget(config.time_budget_s, config.time_budget_action, started)
        fit_callbacks.append(budget)
    with scale.training_scope(config):
        model = build_for_config(config, steps_per_epoch=len(train_data))
        if state.backup:
            _restore(model, run.path / state.backup)
        # shuffle=False: the dataset shuffles itself by seed and epoch; Keras' own
        # shuffle of the batch order would draw from the global random state,
        # which differs between an uninterrupted process and a resumed one.
        model.fit(train_data, validation_data=val_data, initial_epoch=state.epochs_done,
                  epochs=config.epochs, callbacks=fit_callbacks, verbose=verbose,
                  shuffle=False)
    if state.epochs_done >= config.epochs:
        return None
    if budget and budget.paused_after == state.epochs_done:
        return budget.paused_after  # a pause: the folder is as a kill between epochs left it
    # An early stop, the budget with --time-budget-action finish, or a callback: the end.
    _record_early_stop(run, state)
    return None


def _restore(model, backup):
    """Weights and optimizer state (step count, moments) of the last kept epoch."""
    model.optimizer.build(model.trainable_variables)
    try:
        model.load_weights(backup)
    except Exception as e:  # a damaged archive fails in many ways (zip, h5py, shapes)
        check_interrupted()  # Keras turns Ctrl-C during loading into another error
        raise RunError(f"{backup} cannot be read ({type(e).__name__}: {str(e)[:200]}). "
                       "Move the run folder away to start over.") from e
    check_interrupted()


def _columns(rows):
    """Rows (one dict per epoch) as a dict of lists, like ``read_log``."""
    keys = sorted({k for row in rows for k in row}, key=lambda k: (k != "epoch", k))
    return {k: [row.get(k, np.nan) for row in rows] for k in keys}


def _save_figures(run_dir, history, model, x_test, y_test, pred, n=10):
    with atomic_path(run_dir / "learning_curves.png") as tmp:
        viz.save(viz.plot_learning_curves(history), tmp)
    if not getattr(model, "has_decoder", False):
        return
    recon = model.predict(x_test[:n], verbose=0)["reconstruction"]
    with atomic_path(run_dir / "reconstructions.png") as tmp:
        viz.save(viz.plot_reconstructions(x_test[:n], recon, y_test[:n], pred[:n]), tmp)


def evaluate(model_path, config=None, data_dir=None):
    """Test metrics of a saved CapsNet (the CLI prints them as JSON).

    Raises ``ModelFileError``: no such file, not a Keras model file, not a CapsNet.
    """
    config = config or config_for_profile()
    model = load_capsnet(model_path)
    _, _, (x_test, y_test) = prepare_data(config, data_dir)
    result = evaluate_model(model, x_test, y_test, config.batch_size)
    result.pop("predictions")
    # Say on what: CAPSLIB_PROFILE=quick evaluates only the first 500 test images.
    return {"accuracy": result.pop("accuracy"), "n_test": len(x_test),
            "profile": config.profile, **result}


__all__ = ["TrainConfig", "train", "evaluate", "evaluate_model", "read_log", "prepare_data",
           "ConfigError", "RunError", "ModelFileError"]
