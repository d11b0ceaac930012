"""A trained CapsNet shipped with the course, loaded in one checked call.

A shipped model is a folder (``data/capsnet-fashion-mnist/`` for the course's)::

    config.json     the CapsNet's ``get_config()``: its architecture
    weights.npz     one array per weight, keyed by the weight's path (float16 to halve the size)
    metrics.json    the training job's metrics (test accuracy, confusion matrix, ...)
    SHA256SUMS      the checksum of each file above (``sha256sum -c SHA256SUMS`` works too)
    MODEL_CARD.md   data, recipe, hardware, figures and limits (written with the run)

``load_pretrained()`` verifies every checksum before reading anything and
returns an ordinary ``CapsNet``; ``save_pretrained()`` writes such a folder.
"""
import json
from pathlib import Path

import numpy as np

from capslib.data import checkout_root, course_root, file_sha256
from capslib.model import CapsNet, ModelFileError

def _shipped_dir():
    """The course folder's copy (found from the working folder, never site-packages);
    else the checkout capslib is imported from, when that one holds the model."""
    relative = Path("data") / "capsnet-fashion-mnist"
    for root in (course_root(), checkout_root()):
        if root is not None and (root / relative / "SHA256SUMS").is_file():
            return root / relative
    return course_root() / relative


SHIPPED_DIR = _shipped_dir()
FILES = ("config.json", "weights.npz", "metrics.json")


class PretrainedError(ModelFileError):
    """A shipped model that is missing, incomplete or altered."""


def available(folder=SHIPPED_DIR):
    """Whether ``folder`` holds a shipped model (its checksums are checked on loading)."""
    return (Path(folder) / "SHA256SUMS").is_file()


def save_pretrained(model, folder, metrics=None, dtype="float16"):
    """Write ``model`` (a built CapsNet) as a shipped-model folder; return its path.

    Weights are stored as ``dtype`` (float16 halves the size; measure the
    accuracy of the stored weights before shipping them).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(model.get_config(), indent=2) + "\n")
    np.savez_compressed(folder / "weights.npz",  # zip-deflated: under 15 MiB
             **{w.path: np.asarray(w.numpy(), dtype=dtype) for w in model.weights})
    (folder / "metrics.json").write_text(json.dumps(metrics or {}, indent=2) + "\n")
    sums = "".join(f"{file_sha256(folder / name)}  {name}\n" for name in FILES)
    (folder / "SHA256SUMS").write_text(sums)
    return folder


def _restore_hint():
    if checkout_root() is not None:
        return "restore it with `git checkout -- data/`"
    return "copy the course's data/capsnet-fashion-mnist folder again"


def _verified(folder):
    sums_path = folder / "SHA256SUMS"
    if not sums_path.is_file():
        raise PretrainedError(
            f"{folder}: no shipped model here (no SHA256SUMS). Train your own with "
            "06_training.ipynb or `python -m capslib train`, or restore the folder: "
            f"{_restore_hint()}.")
    expected = {}
    for line in sums_path.read_text().splitlines():
        # "DIGEST  NAME" (text mode) or "DIGEST *NAME" (`sha256sum -b`, binary mode)
        digest, _, name = line.strip().partition(" ")
        expected[name[1:] if name[:1] in " *" else name] = digest
    for name in FILES:
        path = folder / name
        if name not in expected:
            raise PretrainedError(f"{sums_path}: no checksum for {name}")
        if not path.is_file():
            raise PretrainedError(f"{path}: missing; {_restore_hint()}")
        found = file_sha256(path)
        if found != expected[name]:
            raise PretrainedError(
                f"{path}: altered (SHA-256 {found[:12]}..., expected {expected[name][:12]}...); "
                f"{_restore_hint()}")


def load_pretrained(folder=SHIPPED_DIR):
    """The shipped CapsNet, checksums verified, weights as float32, not compiled."""
    folder = Path(folder)
    _verified(folder)
    model = CapsNet.from_config(json.loads((folder / "config.json").read_text()))
    model.build((None, *model.image_shape))
    with np.load(folder / "weights.npz") as stored:
        missing = [w.path for w in model.weights if w.path not in stored]
        if missing:
            raise PretrainedError(f"{folder / 'weights.npz'}: no values for {missing[:3]}")
        for w in model.weights:
            value = stored[w.path]
            if value.shape != tuple(w.shape):
                raise PretrainedError(f"{folder / 'weights.npz'}: {w.path} has shape "
                                      f"{value.shape}, the model expects {tuple(w.shape)}")
            w.assign(value.astype("float32"))
    return model


def load_metrics(folder=SHIPPED_DIR):
    """The metrics the shipped model was released with (checksums verified)."""
    folder = Path(folder)
    _verified(folder)
    return json.loads((folder / "metrics.json").read_text())


# -- Shipping a finished run ---------------------------------------------------

CARD = "MODEL_CARD.md"
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
            f"{GPU_REFERENCE}; the paper reports 93.62% (chosen on the test set).")


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


def ship_run(run_dir, folder=SHIPPED_DIR, command=None, data_dir=None, dtype="float16"):
    """Ship a finished run's selected model: float16 weights, metrics, a model
    card and SHA-256 sums in ``folder``; the shipped weights' test accuracy is
    measured and written beside the run's. Returns the shipped metrics."""
    from capslib.config import config_for_profile
    from capslib.model import load_capsnet
    from capslib.train import evaluate

    metrics, log = _run_facts(run_dir)
    folder = Path(folder)
    model = load_capsnet(Path(run_dir) / "best.keras")
    save_pretrained(model, folder, metrics=metrics, dtype=dtype)
    shipped = evaluate(folder, config_for_profile("full"), data_dir=data_dir)  # all test images
    metrics["shipped_weights"] = {"dtype": dtype, "test_accuracy": shipped["accuracy"],
                                  "n_test": shipped["n_test"],
                                  "command": f"python -m capslib evaluate {folder}",
                                  **quick_check(folder, data_dir)}
    metrics["config"] = {**metrics.get("config", {}), "run_dir": str(run_dir)}
    card = _model_card(metrics, log, {"test_accuracy": shipped["accuracy"],
                                      "n_test": shipped["n_test"]},
                       command or (f"python -m capslib train --run-dir {run_dir}  # with the "
                                   "settings of config.json (pass ship --command-used to "
                                   "record the command)"), folder)
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (folder / CARD).write_text(card)
    sums = "".join(f"{file_sha256(folder / name)}  {name}\n" for name in (*FILES, CARD))
    (folder / "SHA256SUMS").write_text(sums)
    return metrics
