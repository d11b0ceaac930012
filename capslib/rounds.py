"""One trained CapsNet routed with 1, 2 and 3 rounds at inference (notebook 08).

Notebook 08's 1-round and 3-round CapsNets are two trainings, so their difference mixes routing
with training noise. Here one model's **same weights** are routed with fewer rounds: whatever
changes is routing's alone. Round r of an R-round routing is exactly the last round of an r-round
routing (the logits so far are the same), so one pass gives every count of rounds.

The committed measurement of the shipped model is ``results/routing-rounds/`` (made by
``python -m capslib.rounds``; its README.md gives the command, the hardware and the time).
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from capslib import data
from capslib.runs import atomic_path, write_json_atomic, write_text_atomic

ROUNDS = 3
COMPARED = ((3, 1), (3, 2))  # (a, b): a rounds against b rounds, on every set
COMMITTED = "routing-rounds"  # results/<this>, found by capslib.experiment.committed_results
PREDICTIONS = "predictions.npz"


def lengths_per_round(model, images, rounds=ROUNDS, batch_size=200):
    """The class capsules' lengths after each routing round of ``model``'s own weights.

    ``images`` (N, 28, 28, 1) floats in [0, 1]; returns float32 (rounds, N, n_classes): entry
    ``[r - 1]`` is what the model answers when routed with r rounds (``routing_iterations`` of
    the model itself is not used). Raises ValueError for images the model cannot take.
    """
    from keras import ops

    from capslib.routing import routing_rounds
    from capslib.runs import check_interrupted

    images = np.asarray(images)
    model.check_images(images)
    if not len(images):
        raise ValueError("no images to route: images has length 0")
    out = []
    for start in range(0, len(images), batch_size):
        batch = ops.convert_to_tensor(images[start:start + batch_size].astype("float32"))
        u_hat = model.digit_caps.predictions(model.primary_caps(model.conv1(batch)))
        out.append(np.stack([ops.convert_to_numpy(model.lengths(v))
                             for v, _ in routing_rounds(u_hat, rounds)]))
        check_interrupted()
    return np.concatenate(out, axis=1)


def measure(model, sets, rounds=ROUNDS, batch_size=200, verbose=True):
    """``{set name: int8 (rounds, N)}``: the class ``model`` predicts with 1..rounds rounds.

    ``sets``: ``{name: images}``. Prints one line per set when ``verbose``.
    """
    predicted = {}
    for k, (name, images) in enumerate(sets.items()):
        start = time.perf_counter()
        predicted[name] = np.argmax(lengths_per_round(model, images, rounds, batch_size),
                                    axis=-1).astype(np.int8)
        if verbose:
            print(f"[{k + 1}/{len(sets)}] {name}: {len(images):,} images, "
                  f"{time.perf_counter() - start:.0f} s", flush=True)
    return predicted


def comparisons(predicted, labels, compared=COMPARED):
    """One dict per (set, a rounds vs b rounds), paired on the same images: ``set``, ``n``,
    ``a``, ``b`` (rounds), ``acc_a``, ``acc_b``, ``difference`` (acc_a - acc_b, a fraction),
    ``low``, ``high`` (its paired 95% interval), ``p`` (McNemar's exact test), ``changed``
    (the fraction of images whose answer differs, right or wrong), ``holm`` (p corrected by
    Holm's method over every row)."""
    from capslib import stats

    labels = np.asarray(labels)
    needed = max(max(pair) for pair in compared)
    rows = []
    for name, answers in predicted.items():
        if answers.shape[1] != len(labels):
            raise ValueError(f"{name}: {answers.shape[1]} answers for {len(labels)} labels")
        if answers.shape[0] < needed:
            raise ValueError(f"{name}: answers of {answers.shape[0]} rounds; comparing "
                             f"{compared} needs {needed}")
        for a, b in compared:
            correct_a, correct_b = answers[a - 1] == labels, answers[b - 1] == labels
            acc_a, acc_b = float(correct_a.mean()), float(correct_b.mean())
            low, high = stats.paired_difference_interval(correct_a, correct_b)
            rows.append(dict(set=name, n=len(labels), a=a, b=b, acc_a=acc_a, acc_b=acc_b,
                             difference=acc_a - acc_b,
                             low=low, high=high, p=stats.mcnemar(correct_a, correct_b).p,
                             changed=float(np.mean(answers[a - 1] != answers[b - 1]))))
    for row, adjusted in zip(rows, stats.holm([row["p"] for row in rows])):
        row["holm"] = adjusted
    return rows


def table(rows):
    """:func:`comparisons` as a Markdown table (what 08 prints and README.md holds)."""
    from capslib.stats import format_p

    lines = ["| set | images | rounds | a % | b % | a - b (points) | 95% interval | answers "
             "changed | McNemar p | Holm p |",
             "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(
            f"| {r['set']} | {r['n']:,} | {r['a']} vs {r['b']} | {100 * r['acc_a']:.2f} | "
            f"{100 * r['acc_b']:.2f} | {100 * r['difference']:+.2f} | "
            f"{100 * r['low']:+.2f} to {100 * r['high']:+.2f} | {100 * r['changed']:.1f}% | "
            f"{format_p(r['p'])} | {format_p(r['holm'])} |")
    return "\n".join(lines) + "\n"


def test_sets(n=None, data_dir=None, seed=0, names=None):
    """08's transformed test sets (``capslib.experiment.TEST_SETS``, or those in ``names``)
    of ``n`` test images balanced over the classes (all 10,000 when None):
    ``({name: images}, labels)``."""
    from capslib.experiment import SEED, TEST_SETS

    _, (x_test, y_test) = data.load_fashion_mnist(data_dir)
    picked = data.balanced_indices(y_test, n or len(y_test))
    return ({name: data.transform_images(x_test[picked], kind, amount, seed=SEED + seed)
             for name, (kind, amount) in TEST_SETS.items() if names is None or name in names},
            y_test[picked])


def write(folder, predicted, labels, facts):
    """``predictions.npz`` (one int8 (rounds, N) array per set, and the labels), then
    ``results.json`` (``facts`` and the comparisons) and ``README.md``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    keys = {f"set{k}": name for k, name in enumerate(predicted)}
    with atomic_path(folder / PREDICTIONS) as tmp:
        np.savez_compressed(tmp, labels=np.asarray(labels, np.int8),
                            **{key: predicted[name] for key, name in keys.items()})
    rows = comparisons(predicted, labels)
    results = dict(facts, sets=keys, comparisons=rows)
    write_json_atomic(folder / "results.json", results)
    write_text_atomic(folder / "README.md",
        "# One model, routed with 1, 2 and 3 rounds\n\n"
        f"{facts['model']}, its same weights routed with 1, 2 and 3 rounds at inference on "
        f"08's test sets ({facts['n']:,} test images each). Paired on the same images: "
        "McNemar's exact test, the paired 95% interval, Holm's correction over the "
        f"{len(rows)} rows. Made by `{facts['command']}` in {facts['seconds'] / 60:.1f} min on "
        f"{facts['hardware']} ({facts['backend']}).\n\n" + table(rows))
    return results


def load(folder=None):
    """``(results, predicted, labels)`` as :func:`write` left them in ``folder`` (default:
    the committed ``results/routing-rounds``; FileNotFoundError, one line, if not found)."""
    if folder is None:
        from capslib.experiment import committed_results
        folder = committed_results(COMMITTED)
    folder = Path(folder)
    results = json.loads((folder / "results.json").read_text())
    with np.load(folder / PREDICTIONS) as stored:
        predicted = {name: stored[key] for key, name in results["sets"].items()}
        labels = stored["labels"].astype(np.int64)
    return results, predicted, labels


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m capslib.rounds", description=__doc__.split(
        "\n\n")[0])
    committed = data.course_root() / "results" / COMMITTED
    parser.add_argument("--out", default=None,
                        help=f"folder to write (default: {committed}, the committed results)")
    parser.add_argument("--n", type=int, default=None,
                        help="test images per set (balanced; default all 10,000)")
    args = parser.parse_args(argv)
    if args.n and args.out is None:
        parser.error(f"--n {args.n}: give --out too; {committed} holds the run on all "
                     "10,000 test images, which its test and notebook 08 read")
    args.out = args.out or str(committed)
    import keras

    from capslib import device, pretrained

    start = time.perf_counter()
    model = pretrained.load_pretrained()
    sets, labels = test_sets(args.n)
    predicted = measure(model, sets)
    facts = dict(model="The shipped CapsNet (data/capsnet-fashion-mnist)", n=len(labels),
                 command="python -m capslib.rounds" + (f" --n {args.n}" if args.n else ""),
                 seconds=time.perf_counter() - start, hardware=device.device_description(),
                 backend=keras.backend.backend())
    results = write(args.out, predicted, labels, facts)
    print(table(results["comparisons"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
