"""Does routing help? The experiment of notebook 08, from the command line.

On one split, one recipe and one number of epochs, the ``train`` job trains
four models: the paper's baseline CNN, CapsNet with 1 routing round, with 3,
and with 3 but no decoder. Each is selected on validation loss and tested
once on the test set (by the job); then every model is measured on test
images it never trained on, moved further than the training's 2 px, turned
or zoomed (``capslib.data.transform_images``), on a horizontal shift sweep,
and the 3-round CapsNet's couplings are traced round by round over the whole
test set::

    python -m capslib experiment --profile class --out results/routing-class

Each model's run lives in ``--runs-dir`` (resumable: run the same command
again after an interruption), each measurement is kept as soon as it is
made, and ``--out`` gets ``results.json``, the models' ``metrics.json`` and
``log.csv``, and a README with the command and the hardware.
"""
import contextlib
import json
import platform
import shutil
import time
from pathlib import Path

import keras
import numpy as np

from capslib import data, device
from capslib.baseline import class_scores
from capslib.config import ConfigError, config_for_profile, get_profile
from capslib.loading import load_classifier
from capslib.routing import coupling_entropy
from capslib.runs import (RunError, RunFolder, StopOnSignal, interrupt_handling, os_error,
                          shown_path, write_json_atomic, write_text_atomic)

# name -> (what the reader sees, the train job's settings)
VARIANTS = {
    "baseline_cnn": ("baseline CNN (35.4M)", dict(model="baseline")),
    "capsnet_r1": ("CapsNet, 1 routing round", dict(routing_iterations=1)),
    "capsnet_r3": ("CapsNet, 3 routing rounds", dict(routing_iterations=3)),
    "capsnet_r3_no_decoder": ("CapsNet, 3 rounds, no decoder",
                              dict(routing_iterations=3, decoder=False)),
}
# The course folder (``capslib.data.course_root``): found from the working
# folder, else the checkout capslib runs from; never site-packages.
REPO_ROOT = data.course_root()
TRACED = "capsnet_r3"  # the model whose couplings are traced

# name -> (kind, amount) for capslib.data.transform_images
TEST_SETS = {
    "clean (same images)": ("none", 0),
    "shift 4 px": ("shift", 4),
    "shift 6 px": ("shift", 6),
    "rotate 15°": ("rotate", 15),
    "rotate 30°": ("rotate", 30),
    "zoom 0.75": ("scale", 0.75),
    "zoom 1.25": ("scale", 1.25),
}
SHIFTS = tuple(range(-6, 7))  # the horizontal sweep, px

# Sizes per profile: the train job's overrides, then how many test images the
# transformed sets and the shift sweep use (balanced over the classes).
SIZES = {
    "full": dict(train={}, transformed=10_000, sweep=1000),
    "lesson": dict(train={}, transformed=10_000, sweep=1000),
    # ~45 minutes on 2 CPU cores, most of it the baseline CNN (~10 images/s).
    "class": dict(train=dict(train_limit=5000, val_size=2000), transformed=2000, sweep=200),
    "quick": dict(train=dict(epochs=1, train_limit=100, val_size=100, test_limit=200),
                  transformed=50, sweep=10),
}
SEED = 0  # of the transformations


def experiment_configs(profile):
    """The train job's TrainConfig of each variant at ``profile``."""
    sizes = SIZES[profile]["train"]
    return {name: config_for_profile(profile, **sizes, **settings)
            for name, (_, settings) in VARIANTS.items()}


def run_experiment(profile=None, runs_dir=None, out=None, data_dir=None, verbose=2,
                   command=None):
    """Train (or resume) the four models, measure them, write ``out``; return the results."""
    profile = profile or get_profile("class")
    if profile not in SIZES:
        raise ConfigError(f"profile {profile!r} is not one of {', '.join(SIZES)}")
    runs_dir = Path(runs_dir or Path("runs") / f"experiment-{profile}")
    out = Path(out or Path("results") / f"routing-{profile}")
    sizes = SIZES[profile]
    configs = experiment_configs(profile)
    # Both folders must be writable before hours of training, not after.
    check_writable(runs_dir, "--runs-dir")
    check_writable(out, "--out")
    start = time.perf_counter()
    print(f"Experiment at the {profile} profile: {len(configs)} models in "
          f"{shown_path(runs_dir)}, results in {shown_path(out)}.")
    counted = []  # set once this session's time is in elapsed.json
    try:
        with interrupt_handling(sigterm=False):  # Ctrl-C at every step, as in train()
            return _run_experiment(profile, runs_dir, out, data_dir, verbose, command,
                                   sizes, configs, start, counted)
    except BaseException:  # interrupted or failed: its time still counts in the total
        if not counted:
            with contextlib.suppress(Exception):
                _add_elapsed(runs_dir, time.perf_counter() - start)
        raise


def check_writable(folder, flag):
    """RunError (one line naming ``folder`` and ``flag``) unless files can be written there."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not folder.is_dir():
            raise RunError(f"{folder}: a file, not a folder; choose another {flag}.")
        write_text_atomic(folder / ".capslib-write-check", "")
        (folder / ".capslib-write-check").unlink()
    except OSError as e:
        raise os_error(e, folder, flag) from None


def _run_experiment(profile, runs_dir, out, data_dir, verbose, command, sizes, configs, start,
                    counted):
    from capslib.train import prepare_data, train

    results = {"profile": profile, "variants": {}, "test_sets": {}}
    for k, (name, config) in enumerate(configs.items()):
        print(f"\n[{k + 1}/{len(configs)}] {name}: training ({config.epochs} epochs on "
              f"{config.train_limit or 'all'} images)")
        metrics = train(config, run_dir=runs_dir / name, data_dir=data_dir, verbose=verbose,
                        flag="--runs-dir")
        results["variants"][name] = {"label": VARIANTS[name][0], "metrics": metrics}

    config = next(iter(configs.values()))
    _, _, (x_test, y_test) = prepare_data(config, data_dir)
    picked = data.balanced_indices(y_test, sizes["transformed"])
    swept = data.balanced_indices(y_test, sizes["sweep"])
    sets = {name: data.transform_images(x_test[picked], kind, amount, seed=SEED)
            for name, (kind, amount) in TEST_SETS.items()}
    results["test_sets"] = {name: {"kind": kind, "amount": amount, "n": len(picked)}
                            for name, (kind, amount) in TEST_SETS.items()}
    for name in configs:
        entry = results["variants"][name]
        print(f"\n{name}: {len(sets)} test sets of {len(picked)} images, {len(SHIFTS)} shifts of "
              f"{len(swept)} images")
        entry.update(_measure(runs_dir / name, sets, y_test[picked], x_test[swept],
                              y_test[swept], config.batch_size))
        if name == TRACED:
            print(f"{name}: couplings round by round over {len(x_test):,} test images")
            results["couplings"] = _traced(runs_dir / name, x_test)

    session = time.perf_counter() - start
    results.update(
        command=command or f"capslib.experiment.run_experiment({profile!r})",
        sizes={"transformed": len(picked), "sweep": len(swept), "shifts": list(SHIFTS),
               "n_test": len(x_test)},
        hardware=_hardware(), backend=keras.backend.backend(),
        keras_version=keras.__version__, wall_seconds_this_session=session,
        wall_seconds=_add_elapsed(runs_dir, session))
    counted.append(True)
    _write(out, runs_dir, results)
    print(f"\nWritten to {shown_path(out)} in {session / 60:.1f} minutes "
          f"({results['wall_seconds'] / 60:.1f} in all sessions of this experiment).")
    return results


def _measure(run_dir, sets, labels, sweep_images, sweep_labels, batch_size):
    """Accuracy on each transformed set and the shift sweep, kept in the run
    folder (``transformed.json``), with each image's predicted class beside it
    (``predictions.npz``, read by :func:`load_predictions`: paired tests)."""
    kept = RunFolder(run_dir).read_json(run_dir / "transformed.json", "the measurements")
    if (kept is not None and set(kept["accuracy"]) == set(sets)
            and _read_predictions(run_dir / PREDICTIONS, sets) is not None):
        return kept
    model = load_classifier(run_dir / "best.keras")
    accuracy, predicted = {}, {}
    bar = keras.utils.Progbar(len(sets) + len(SHIFTS), unit_name="test set")
    for k, (name, images) in enumerate(sets.items()):
        scores = class_scores(model.predict(images, batch_size=batch_size, verbose=0,
                                            callbacks=[StopOnSignal()]))
        predicted[name] = np.argmax(scores, axis=1)
        accuracy[name] = float(np.mean(predicted[name] == labels))
        bar.update(k + 1)
    sweep = {"accuracy": [], "true_class_score": []}
    sweep_predicted = []
    for k, dx in enumerate(SHIFTS):
        moved = data.shift_images(sweep_images, 0, dx)
        scores = class_scores(model.predict(moved, batch_size=batch_size, verbose=0,
                                            callbacks=[StopOnSignal()]))
        sweep_predicted.append(np.argmax(scores, axis=1))
        sweep["accuracy"].append(float(np.mean(sweep_predicted[-1] == sweep_labels)))
        sweep["true_class_score"].append(
            float(np.mean(scores[np.arange(len(scores)), sweep_labels])))
        bar.update(len(sets) + k + 1)
    # Before transformed.json: a folder holding that file also holds these.
    _write_predictions(run_dir / PREDICTIONS, predicted, labels, sweep_predicted, sweep_labels)
    kept = {"accuracy": accuracy, "shift_sweep": sweep}
    write_json_atomic(run_dir / "transformed.json", kept)
    return kept


def _traced(run_dir, images, batch_size=100):
    """Round by round over ``images``: the couplings' entropy (nats; log 10 is
    uniform), their largest value and the coupling to the predicted class, per
    child capsule, plain and weighted by the child's length."""
    kept = RunFolder(run_dir).read_json(run_dir / "couplings.json", "the couplings")
    if kept is not None and kept["n_images"] == len(images):
        return kept
    model = load_classifier(run_dir / "best.keras")
    sums = None
    n_children = 0
    bar = keras.utils.Progbar(len(images), unit_name="image")
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        # (rounds, b, i, j), (b, i), (b, j)
        couplings, child_lengths, lengths = model.routing_trace(batch)
        predicted = np.argmax(lengths, axis=1)
        entropy = coupling_entropy(couplings)
        to_predicted = np.take_along_axis(
            couplings, predicted[None, :, None, None], axis=-1)[..., 0]
        top_two = np.sort(couplings, axis=-1)[..., -2:]
        # Strictly the strongest: in round 1 all ten are tied, and none is.
        strongest = ((couplings.argmax(axis=-1) == predicted[None, :, None])
                     & (top_two[..., 1] > top_two[..., 0]))
        stats = {"entropy": entropy, "max": couplings.max(axis=-1),
                 "to_predicted": to_predicted,
                 "predicted_is_strongest": strongest.astype(float)}
        weights = child_lengths[None]
        batch_sums = {}
        for key, value in stats.items():
            batch_sums[key] = value.sum(axis=(1, 2))
            batch_sums[f"{key}_weighted"] = (value * weights).sum(axis=(1, 2))
        batch_sums["weight"] = np.broadcast_to(weights, entropy.shape).sum(axis=(1, 2))
        sums = batch_sums if sums is None else {k: sums[k] + v for k, v in batch_sums.items()}
        n_children += entropy.shape[1] * entropy.shape[2]
        bar.update(min(start + batch_size, len(images)))
    rounds = {}
    for key in ("entropy", "max", "to_predicted", "predicted_is_strongest"):
        rounds[key] = (sums[key] / n_children).tolist()
        rounds[f"{key}_weighted"] = (sums[f"{key}_weighted"] / sums["weight"]).tolist()
    kept = {"n_images": len(images), "n_children_per_image": int(couplings.shape[2]),
            "uniform_entropy": float(np.log(couplings.shape[-1])), "per_round": rounds}
    write_json_atomic(run_dir / "couplings.json", kept)
    return kept


def _add_elapsed(runs_dir, seconds):
    """Total wall time of the experiment over all its sessions (an interrupted one resumes)."""
    path = runs_dir / "elapsed.json"
    kept = RunFolder(runs_dir).read_json(path, "the experiment's time") or {"seconds": 0.0}
    total = kept["seconds"] + seconds
    write_json_atomic(path, {"seconds": total})
    return total


def _hardware():
    return {"device": device.device_description(), "machine": platform.machine(),
            "python": platform.python_version()}


def _write(out, runs_dir, results):
    out.mkdir(parents=True, exist_ok=True)
    for name in results["variants"]:
        (out / name).mkdir(exist_ok=True)
        for file in ("metrics.json", "log.csv", "learning_curves.png", PREDICTIONS):
            if (runs_dir / name / file).is_file():
                shutil.copyfile(runs_dir / name / file, out / name / file)
    write_json_atomic(out / "results.json", results)
    write_text_atomic(out / "README.md", _readme(results))
    write_text_atomic(out / "comparisons.md",
                      comparison_table(results, load_predictions(out, results)))


def _readme(results):
    rows = [f"| {entry['label']} | {entry['metrics']['parameters']:,} | "
            f"{100 * entry['metrics']['val_accuracy']:.2f} | "
            f"{100 * entry['metrics']['test_accuracy']:.2f} | "
            + " | ".join(f"{100 * a:.1f}" for a in entry["accuracy"].values()) + " |"
            for entry in results["variants"].values()]
    sets = list(results["test_sets"])
    config = next(iter(results["variants"].values()))["metrics"]["config"]
    return "\n".join([
        f"# Does routing help? ({results['profile']} profile)", "",
        "Made by (from the repository root):", "", "```",
        results["command"], "```", "",
        f"Hardware: {results['hardware']['device']}; Keras {results['keras_version']} "
        f"({results['backend']}); {results['wall_seconds'] / 60:.0f} minutes in all (every "
        "session of the experiment).",
        f"Recipe of every model: {config['epochs']} epochs on {config['train_limit'] or 'all'} "
        f"training images, validation split of {config['val_size']} (seed {config['seed']}), "
        "best epoch by validation loss, test set evaluated once (test %). Transformed sets: "
        f"{results['sizes']['transformed']} test images (balanced), seed {SEED}.", "",
        "| model | parameters | val % | test % | " + " | ".join(sets) + " |",
        "| --- | ---: | ---: | ---: | " + " | ".join("---:" for _ in sets) + " |",
        *rows, "",
        "Notebook 08 reads `results.json`; each model's `metrics.json` and `log.csv` are "
        "beside it.", ""])


def committed_results(name="routing-class", file="results.json"):
    """The course's folder ``results/<name>`` (holding ``file``): in the
    working folder or its parent (the notebooks' ``..``), else in the checkout
    capslib runs from (an editable install; nbgrader grades in a folder of its own).

    Raises FileNotFoundError, one line naming where it looked, if none has it.
    """
    roots = data.working_folders()
    if data.checkout_root() is not None:
        roots.append(data.checkout_root())
    for root in roots:
        if (root / "results" / name / file).is_file():
            return root / "results" / name
    where = " or ".join(str(root / "results" / name / file) for root in roots)
    make = (f", or make them with `python -m capslib experiment --profile class --out "
            f"results/{name}`" if file == "results.json" else "")
    # An installed capslib without the course folder (Colab, a pip install): the
    # repository's copy, fetched once into the download cache, checksums verified.
    from capslib import course
    folder = f"results/{name}"
    if data.checkout_root() is None and f"{folder}/{file}" in course.manifest():
        if course.present(folder):
            return course.cached(folder)
        try:
            return course.fetch_folder(folder)
        except course.DownloadError as e:
            raise FileNotFoundError(
                f"no committed results: expected {where}, and {e}{make}.") from None
    raise FileNotFoundError(
        f"no committed results: expected {where}. Open the notebook from the course folder's "
        f"notebooks/ (the course's results/ holds them){make}.")


def load_results(path):
    """The ``results.json`` of an experiment folder (or the file itself)."""
    path = Path(path)
    path = path / "results.json" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no results. Make them with `python -m capslib experiment`.")
    return json.loads(path.read_text())


# -- per-image predictions and the comparisons of notebook 08 ----------------------

PREDICTIONS = "predictions.npz"  # in each model's run folder and in --out/<model>/


def _write_predictions(path, predicted, labels, sweep_predicted, sweep_labels):
    """Each image's predicted class on each transformed set (and the sweep), as
    ``predictions.npz``: ``sets`` (names), ``predicted`` (sets, images),
    ``labels``, ``shifts``, ``sweep_predicted`` (shifts, images), ``sweep_labels``."""
    from capslib.runs import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(
            f, sets=np.array(list(predicted)),
            predicted=np.stack(list(predicted.values())).astype(np.int8),
            labels=np.asarray(labels, dtype=np.int8), shifts=np.array(SHIFTS),
            sweep_predicted=np.stack(sweep_predicted).astype(np.int8),
            sweep_labels=np.asarray(sweep_labels, dtype=np.int8))


def _read_predictions(path, sets=None):
    """The arrays of a ``predictions.npz``, or None if it is absent, unreadable
    or lacks one of ``sets`` (it is measured again then)."""
    import zipfile
    import zlib

    try:
        with np.load(path, allow_pickle=False) as saved:
            kept = {key: saved[key] for key in saved.files}
        names = [str(name) for name in kept["sets"]]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error):
        return None
    if sets is not None and set(names) != set(sets):
        return None
    kept["sets"] = names
    return kept


def load_predictions(folder, results):
    """``{model: {set: bool array}}``: whether each model of ``results`` got
    each image of each transformed set right, from ``<folder>/<model>/predictions.npz``
    (run folders, or an experiment's ``--out``). None unless every model has
    them for every set and all were made on the same images: results made
    before the experiment saved them (the committed ones) have none."""
    correct, labels = {}, None
    for name in results["variants"]:
        kept = _read_predictions(Path(folder) / name / PREDICTIONS, results["test_sets"])
        if kept is None or (labels is not None and not np.array_equal(kept["labels"], labels)):
            return None
        labels = kept["labels"]
        correct[name] = {set_name: kept["predicted"][k] == labels
                         for k, set_name in enumerate(kept["sets"])}
    return correct


# The comparisons notebook 08 tests, (a, b) for "a minus b": four on the whole
# test set, then two on each transformed set (with its untransformed images).
TEST_COMPARISONS = (("capsnet_r3", "capsnet_r1"), ("capsnet_r3", "baseline_cnn"),
                    ("capsnet_r1", "baseline_cnn"), ("capsnet_r3", "capsnet_r3_no_decoder"))
SET_COMPARISONS = (("capsnet_r3", "baseline_cnn"), ("capsnet_r3", "capsnet_r1"))
SHORT_NAMES = {"baseline_cnn": "CNN", "capsnet_r1": "1 round", "capsnet_r3": "3 rounds",
               "capsnet_r3_no_decoder": "no decoder"}


def comparisons(results, predictions=None):
    """One dict per comparison of notebook 08 (those of its models that ``results`` has):
    ``set``, ``n`` (images per model), ``a``, ``b``, ``acc_a``, ``acc_b``,
    ``difference`` (acc_a - acc_b), ``low``, ``high`` (its 95% interval), ``p``
    (two-sided), ``test`` and ``holm`` (p corrected over all the rows).

    Unpaired (two-proportion z-test, interval of two independent proportions)
    unless ``predictions`` (:func:`load_predictions`) holds both models'
    answers per image on the set: then McNemar's exact test and the paired
    interval. The whole test set is always unpaired (the train job keeps its
    accuracy, not its answers).
    """
    from capslib import stats

    variants = results["variants"]
    rows = []

    def add(set_name, n, a, b, acc_a, acc_b):
        if predictions is not None and set_name in predictions.get(a, {}):
            correct_a, correct_b = predictions[a][set_name], predictions[b][set_name]
            p = stats.mcnemar(correct_a, correct_b).p
            low, high = stats.paired_difference_interval(correct_a, correct_b)
            test = "McNemar, paired"
        else:
            p = stats.two_proportion_z_test(acc_a, n, acc_b, n)[1]
            low, high = stats.difference_interval(acc_a, n, acc_b, n)
            test = "z, unpaired"
        rows.append(dict(set=set_name, n=n, a=a, b=b, acc_a=acc_a, acc_b=acc_b,
                         difference=acc_a - acc_b, low=low, high=high, p=p, test=test))

    for a, b in TEST_COMPARISONS:
        if a in variants and b in variants:
            ma, mb = variants[a]["metrics"], variants[b]["metrics"]
            if ma["n_test"] != mb["n_test"]:
                raise ValueError(f"{a} and {b} were tested on {ma['n_test']} and "
                                 f"{mb['n_test']} images: not the same test set")
            add("test set", ma["n_test"], a, b, ma["test_accuracy"], mb["test_accuracy"])
    for a, b in SET_COMPARISONS:
        if a in variants and b in variants:
            for set_name, spec in results["test_sets"].items():
                add(set_name, spec["n"], a, b, variants[a]["accuracy"][set_name],
                    variants[b]["accuracy"][set_name])
    for row, adjusted in zip(rows, stats.holm([row["p"] for row in rows])):
        row["holm"] = adjusted
    return rows


def comparison_table(results, predictions=None):
    """Notebook 08's comparisons (:func:`comparisons`) as one Markdown table and a
    note on how it was computed: what the notebook prints, ``--out``'s
    ``comparisons.md`` holds and README.md quotes."""
    from capslib.stats import format_p

    rows = comparisons(results, predictions)
    header = ["set", "images", "a vs b", "a %", "b %", "a - b (points)",
              "95% interval (points)", "p", "test", "Holm p", "Holm p < 0.05"]
    cells = [[row["set"], f"{row['n']:,}",
              f"{SHORT_NAMES.get(row['a'], row['a'])} vs {SHORT_NAMES.get(row['b'], row['b'])}",
              f"{100 * row['acc_a']:.2f}", f"{100 * row['acc_b']:.2f}",
              f"{100 * row['difference']:+.2f}",
              f"{100 * row['low']:+.2f} to {100 * row['high']:+.2f}",
              format_p(row["p"]), row["test"], format_p(row["holm"]),
              "yes" if row["holm"] < 0.05 else "no"] for row in rows]
    widths = [max(len(line[k]) for line in [header, *cells]) for k in range(len(header))]
    right = {1, 3, 4, 5, 6, 7, 9}  # numbers, right-aligned

    def line(values):
        return "| " + " | ".join(v.rjust(w) if k in right else v.ljust(w)
                                 for k, (v, w) in enumerate(zip(values, widths))) + " |"
    rule = "| " + " | ".join("-" * (w - 1) + ":" if k in right else "-" * w
                             for k, w in enumerate(widths)) + " |"
    survivors = sum(row["holm"] < 0.05 for row in rows)
    paired = any(row["test"].startswith("McNemar") for row in rows)
    unpaired = any(row["test"].startswith("z") for row in rows)
    notes = ["a - b: the difference of accuracy in points; its 95% interval; p: two-sided."]
    if unpaired:
        notes.append("z, unpaired: the two-proportion z-test and the interval of two "
                     "independent proportions. Both models saw the same images, but their "
                     "answers per image were not kept, so the pairing is ignored: "
                     "conservative (wider intervals, larger p than a paired test).")
    if paired:
        notes.append("McNemar, paired: McNemar's exact test on the images where the two "
                     "models disagree, and the paired interval.")
    notes.append(f"Holm p: corrected by Holm's method over the {len(rows)} comparisons of "
                 f"this table (capslib.stats.holm); {survivors} of {len(rows)} stay below "
                 "0.05.")
    return "\n".join([line(header), rule, *map(line, cells), "", " ".join(notes)]) + "\n"


def untrained_couplings(images, seed=0, batch_size=100, dtype="float64", verbose=0):
    """The couplings' statistics of the experiment's trace (the same code,
    ``_traced``) for an *untrained* CapsNet of the traced model's architecture,
    its weights drawn with ``seed``: what routing does by construction, the
    chance level of the trained model's numbers.

    ``dtype``: the precision the untrained model computes in. Its predictions
    are tiny, so routing moves its couplings away from 0.1 by about 1e-7, a
    few float32 steps (float32 resolves 7.5e-9 at 0.1): in float32 many
    children's two largest couplings tie exactly and count as having no
    strongest parent, which lowers the share. float64 resolves them (the
    TensorFlow backend; JAX computes in float32 unless x64 is enabled).

    Reseeds Python, NumPy and the backend (``keras.utils.set_random_seed``).
    """
    import io
    import tempfile

    from capslib.model import build_capsnet

    settings = VARIANTS[TRACED][1]
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(dtype)  # for building, and for loading in _traced
    try:
        keras.utils.set_random_seed(seed)
        model = build_capsnet(routing_iterations=settings.get("routing_iterations", 3),
                              decoder=settings.get("decoder", True))
        with tempfile.TemporaryDirectory(prefix="capslib-untrained-") as folder:
            model.save(Path(folder) / "best.keras")
            quiet = (contextlib.nullcontext() if verbose
                     else contextlib.redirect_stdout(io.StringIO()))
            with quiet:
                return _traced(Path(folder), images, batch_size)
    finally:
        keras.config.set_dtype_policy(policy)
