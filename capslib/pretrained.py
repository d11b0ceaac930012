"""Shipping a finished run as the course's trained CapsNet (``python -m capslib ship``).

The shipped folder itself (its files, checksums, ``load_pretrained``,
``save_pretrained``) is ``capslib.shipped``; its names are here too, where the
notebooks and the README have always found them
(``capslib.pretrained.load_pretrained()``).
"""
import json
import os
import shutil
from pathlib import Path

from capslib.shipped import (CARD, FILES, SHIPPED_DIR, SHIPPED_FILES,  # noqa: F401 (re-exported)
                             PretrainedError, available, load_metrics, load_pretrained,
                             save_pretrained, verify)

# -- Shipping a finished run ---------------------------------------------------
GPU_REFERENCE = ("our H100 run (results/gpu-h100-jax, JAX, float32, 80 epochs in a 340 s budget): "
                 "93.74% validation, 92.44% test; validation 91.2% after 12 epochs, 92.4% after 20, "
                 "93.3% after 40")


def _run_facts(run_dir):
    """The finished run's config, metrics and per-epoch log (a run that is not finished is refused)."""
    from capslib.runs import read_log

    run_dir = Path(run_dir)
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.is_file() or not (run_dir / "best.keras").is_file():
        raise PretrainedError(f"{run_dir}: not a finished run (no metrics.json or best.keras); "
                              "run the same train command again to finish it")
    metrics = json.loads(metrics_path.read_text())
    return metrics, read_log(run_dir / "log.csv")


def _summary(metrics, cfg, epochs):
    """The card's first paragraph, from what the run was (not what the course's was)."""
    planned = cfg.get("epochs")
    if epochs is not None and planned and epochs < planned:
        why = " by its time budget" if cfg.get("time_budget_s") else ""
        length = f"{epochs} epochs of a {planned}-epoch recipe, stopped{why}"
    else:
        length = f"{epochs} epochs, as planned"
    on_cpu = "GPU" not in str(metrics.get("device", "")).upper()
    kind = ("**An interim CPU model.** It was trained on a CPU" if on_cpu
            else "It was trained on a GPU")
    return (f"{kind} ({metrics.get('device')}), for {length}. For comparison, "
            f"{GPU_REFERENCE}; Xifeng Guo's Keras re-implementation reports 93.62% (chosen "
            "on the test set; the paper reports no Fashion-MNIST figure).")


def _model_card(metrics, log, shipped, command, folder="data/capsnet-fashion-mnist"):
    cfg = metrics.get("config", {})
    epochs = len(log["epoch"]) if log else metrics.get("epochs")
    hours = sum(log.get("epoch_seconds", [])) / 3600 if log else float("nan")
    best = metrics["best_epoch"]
    per_class = "\n".join(f"| {name} | {acc:.1%} |"
                          for name, acc in metrics["per_class_accuracy"].items())
    rows = "\n".join(
        f"| {int(e) + 1} | {log['val_lengths_accuracy'][i]:.2%} | {log['val_loss'][i]:.4f} | "
        f"{log['epoch_seconds'][i] / 60:.1f} |" for i, e in enumerate(log["epoch"]))
    return f"""# CapsNet on Fashion-MNIST: the course's shipped model

{_summary(metrics, cfg, epochs)}

| | |
| --- | --- |
| data | Fashion-MNIST (`data/fashion-mnist`): {metrics['n_train']:,} training images, a stratified validation split of {metrics['n_val']:,} (seed {cfg.get('seed')}), the {metrics['n_test']:,} test images |
| recipe | the paper's CapsNet ({metrics['parameters']:,} parameters, {cfg.get('routing_iterations')} routing iterations, margin loss + {cfg.get('reconstruction_weight')} x reconstruction loss); Adam {cfg.get('learning_rate')} x {cfg.get('lr_decay')} per epoch, batch {cfg.get('batch_size')}, random shift up to {cfg.get('max_shift')} px and horizontal flip (ours), float32 |
| epochs | {epochs} trained; **epoch {best} selected on the validation loss** |
| hardware | {metrics['device']}, {metrics['backend']}, Keras {metrics['keras_version']}; {hours:.1f} hours of training ({metrics['train_images_per_s']:.0f} training images/s in the last session, other work sharing the cores) |
| validation accuracy | **{metrics['val_accuracy']:.2%}** (the selected epoch) |
| test accuracy | **{metrics['test_accuracy']:.2%}** on {metrics['n_test']:,} test images, evaluated once, after selection |
| shipped weights | float16 (`weights.npz`); their test accuracy: {shipped['test_accuracy']:.2%} on all {shipped['n_test']:,} test images (`python -m capslib evaluate {folder}`) |

The run's command (run again, it continues the same run folder; a finished run is not retrained):

```sh
{command}
python -m capslib ship {cfg.get('run_dir', 'RUN_DIR')} --out {folder}
```

Per epoch (validation accuracy of the class capsules' lengths, validation loss, minutes):

| epoch | val. accuracy | val. loss | minutes |
| --- | --- | --- | --- |
{rows}

Test accuracy per class:

| class | accuracy |
| --- | --- |
{per_class}

Limits: one seed; a short training (the learning curves had not flattened, see `results/cpu-interim`);
the test accuracy is about 1.3 points below our validation split on longer runs (README); no
test-time augmentation. Load it with `capslib.pretrained.load_pretrained()` (checksums verified).
"""


QUICK_CHECK_IMAGES = 500  # enough to catch altered weights, fast enough for CI


def quick_check(folder=SHIPPED_DIR, data_dir=None, n=QUICK_CHECK_IMAGES):
    """How many of the first ``n`` test images the shipped model gets right:
    stored at shipping time, recomputed by the tests (a few seconds, not the
    whole test set)."""
    from capslib.data import load_fashion_mnist
    from capslib.train import evaluate_model

    _, (x_test, y_test) = load_fashion_mnist(data_dir)
    result = evaluate_model(load_pretrained(folder), x_test[:n], y_test[:n])
    return {"quick_check_images": n, "quick_check_correct": int(round(result["accuracy"] * n))}


class ShipRefused(PretrainedError):
    """``ship`` will not write there, or not this run: one line saying why and what to do."""


# What only a run folder holds: never a place to ship to (its config.json and metrics.json,
# the once-only test result, would be overwritten).
RUN_FILES = ("state.json", "log.csv", "best.keras", "backup", ".lock")


def check_out_folder(folder, run_dir=None):
    """Refuse (``ShipRefused``) an ``--out`` that is, holds or lies above a run folder, or holds
    anything a shipped model does not: the folder is replaced whole."""
    folder = Path(folder)
    where = f"--out {folder}"
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise ShipRefused(f"{where}: not a folder; give a folder of its own "
                          "(default data/capsnet-fashion-mnist)")
    if run_dir is not None:
        out, run = folder.resolve(), Path(run_dir).resolve()
        if out == run or out in run.parents:
            raise ShipRefused(f"{where}: {'is' if out == run else 'holds'} the run folder {run_dir}; "
                              "give --out a folder of its own (default data/capsnet-fashion-mnist)")
    if not folder.is_dir():
        return
    names = sorted(p.name for p in folder.iterdir())
    run_like = [n for n in names if n in RUN_FILES]
    if run_like:
        raise ShipRefused(f"{where}: holds {', '.join(run_like)}, a run folder's files; give --out "
                          "a folder of its own (default data/capsnet-fashion-mnist)")
    other = [n for n in names if n not in SHIPPED_FILES]
    if other:
        more = f" and {len(other) - 3} more" if len(other) > 3 else ""
        raise ShipRefused(f"{where}: holds {', '.join(other[:3])}{more}, which a shipped model "
                          "does not; give a new or empty folder, or a shipped-model folder")


def verified_best(run_dir):
    """The run's ``best.keras``, its SHA-256 checked against the one ``state.json`` recorded."""
    from capslib.data import file_sha256
    run_dir = Path(run_dir)
    best, state_path = run_dir / "best.keras", run_dir / "state.json"
    try:
        state = json.loads(state_path.read_text())
        recorded = state["sha256"]["best.keras"]
        assert isinstance(recorded, str) and len(recorded) == 64
    except FileNotFoundError:
        raise ShipRefused(f"{state_path}: missing, so {best} cannot be verified; ship a run "
                          "folder as the training job left it") from None
    except (OSError, ValueError, KeyError, TypeError, AssertionError):
        raise ShipRefused(f"{state_path}: holds no checksum of best.keras, so it cannot be "
                          "verified; ship a run folder as the training job left it (its "
                          "state.json records the checksum)") from None
    found = file_sha256(best)
    if found != recorded:
        raise ShipRefused(f"{best}: changed since training kept it (SHA-256 {found[:12]}..., "
                          f"state.json says {recorded[:12]}...); nothing shipped: restore it or "
                          "ship another run")
    return best


def check_not_worse(folder, metrics, force=False):
    """Refuse to replace a shipped model with a higher validation accuracy than the run's.
    Returns a line to print, or None."""
    folder = Path(folder)
    if not available(folder):
        return None
    new = metrics.get("val_accuracy")
    try:
        old = load_metrics(folder).get("val_accuracy")
    except (PretrainedError, OSError, ValueError):
        return f"{folder}: the model there is damaged (its checksums fail); replacing it"
    if not isinstance(old, (int, float)) or not isinstance(new, (int, float)):
        return None
    if old > new and not force:
        raise ShipRefused(f"{folder} holds a model with validation accuracy {old:.2%}, higher than "
                          f"this run's {new:.2%}; nothing shipped (--force replaces it)")
    return (f"replacing {folder} (validation accuracy {old:.2%}) with a model of {new:.2%}"
            if old > new else None)


def _fsync_files(folder):
    for path in Path(folder).iterdir():
        with open(path, "rb") as f:
            os.fsync(f.fileno())


def ship_run(run_dir, folder=SHIPPED_DIR, command=None, data_dir=None, dtype="float16",
             force=False, say=print):
    """Ship a finished run's selected model: float16 weights, metrics, a model
    card and SHA-256 sums in ``folder``; the shipped weights' test accuracy is
    measured and written beside the run's. Returns the shipped metrics.

    Nothing is trusted or lost: ``best.keras`` is checked against ``state.json``'s
    checksum; a run folder (or anything not a shipped model) as ``folder`` is refused,
    and so is replacing a model with a higher validation accuracy unless ``force``.
    The new folder is built beside ``folder``, loaded back (checksums) and checked
    against the evaluation's figures, then put in place in one rename; the old
    folder is removed after (``capslib.swap``): a kill at any moment leaves the old
    model, whole, or the new one."""
    from capslib import swap
    from capslib.config import config_for_profile
    from capslib.data import file_sha256
    from capslib.loading import load_capsnet
    from capslib.train import evaluate_model, prepare_data

    run_dir, folder = Path(run_dir), Path(folder)
    swap.clean_stale(folder)  # a killed ship's leftovers; an old folder left aside goes back
    check_out_folder(folder, run_dir)
    metrics, log = _run_facts(run_dir)
    best = verified_best(run_dir)
    note = check_not_worse(folder, metrics, force)
    if note:
        say(note)
    work = swap.temp_sibling(folder, "ship")
    try:
        model = load_capsnet(best)
        save_pretrained(model, work, metrics=metrics, dtype=dtype)
        weights_digest = file_sha256(work / "weights.npz")
        config = config_for_profile("full")  # all test images, whatever CAPSLIB_PROFILE says
        _, _, (x_test, y_test) = prepare_data(config, data_dir)
        shipped = evaluate_model(load_pretrained(work), x_test, y_test, config.batch_size)
        n_quick = min(QUICK_CHECK_IMAGES, len(y_test))
        quick = {"quick_check_images": n_quick,
                 "quick_check_correct": int((shipped["predictions"][:n_quick] == y_test[:n_quick]).sum())}
        metrics["shipped_weights"] = {"dtype": dtype, "test_accuracy": shipped["accuracy"],
                                      "n_test": len(y_test),
                                      "command": f"python -m capslib evaluate {folder}", **quick}
        metrics["config"] = {**metrics.get("config", {}), "run_dir": str(run_dir)}
        card = _model_card(metrics, log, {"test_accuracy": shipped["accuracy"], "n_test": len(y_test)},
                           command or (f"python -m capslib train --run-dir {run_dir}  # with the "
                                       "settings of config.json (pass ship --command-used to "
                                       "record the command)"), folder)
        (work / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        (work / CARD).write_text(card)
        sums = "".join(f"{file_sha256(work / name)}  {name}\n" for name in (*FILES, CARD))
        (work / "SHA256SUMS").write_text(sums)
        _verify_built(work, weights_digest, metrics, data_dir)
        _fsync_files(work)
        swap.replace_folder(work, folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # the old model, or the unfinished new one
    return metrics


def _verify_built(work, weights_digest, metrics, data_dir=None):
    """The folder as written: every checksum holds, the weights are those evaluated, and
    loaded back they classify the first test images as the evaluation did."""
    from capslib.data import file_sha256
    verify(work)
    if file_sha256(work / "weights.npz") != weights_digest:
        raise PretrainedError(f"{work / 'weights.npz'}: changed after it was evaluated; nothing shipped")
    stored = load_metrics(work)["shipped_weights"]
    again = quick_check(work, data_dir, n=stored["quick_check_images"])
    if again["quick_check_correct"] != stored["quick_check_correct"]:
        raise PretrainedError(
            f"{work}: loaded back, the model gets {again['quick_check_correct']} of the first "
            f"{stored['quick_check_images']} test images right, the evaluation "
            f"{stored['quick_check_correct']}; nothing shipped")
