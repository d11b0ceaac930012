"""Notebook 08's statistics: one table of comparisons shared by the notebook,
results/routing-class/comparisons.md and README.md; per-image predictions
saved for paired tests; the couplings of an untrained CapsNet (chance level)."""
import json

import keras
import numpy as np
import pytest

from capslib import data, experiment, stats
from capslib.model import build_capsnet

NOTEBOOK = experiment.REPO_ROOT / "notebooks" / "08_does_routing_help.ipynb"


@pytest.fixture(scope="module")
def committed():
    folder = experiment.committed_results()
    return folder, experiment.load_results(folder)


def test_the_committed_table_is_the_same_in_readme_results_and_notebook(committed):
    folder, results = committed
    table = experiment.comparison_table(results, experiment.load_predictions(folder, results))
    assert (folder / "comparisons.md").read_text(encoding="utf-8") == table
    assert table in (experiment.REPO_ROOT / "README.md").read_text(encoding="utf-8"), (
        "README.md's 'Does routing help?' table differs from comparison_table(): paste "
        "results/routing-class/comparisons.md into it")
    printed = ["".join(output.get("text", ""))
               for cell in json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"]
               for output in cell.get("outputs", [])]
    assert any(table in text for text in printed), "notebook 08 does not print the table"


def test_the_committed_comparisons_and_what_survives_holm(committed):
    folder, results = committed
    correct = experiment.load_predictions(folder, results)  # each model's answer per image
    assert correct is not None
    rows = experiment.comparisons(results, correct)
    assert len(rows) == 4 + 2 * len(experiment.TEST_SETS) == 18
    # The test set's four stay unpaired (the training job keeps no answers per image).
    assert [row["test"] for row in rows] == ["z, unpaired"] * 4 + ["McNemar, paired"] * 14
    assert [row["holm"] for row in rows] == stats.holm([row["p"] for row in rows])
    survivors = {(row["set"], row["a"], row["b"]) for row in rows if row["holm"] < 0.05}
    assert survivors == {("test set", "capsnet_r3", "baseline_cnn"),
                         ("test set", "capsnet_r1", "baseline_cnn"),
                         ("clean (same images)", "capsnet_r3", "baseline_cnn"),
                         ("shift 6 px", "capsnet_r3", "baseline_cnn"),
                         ("rotate 30°", "capsnet_r3", "baseline_cnn"),
                         ("rotate 15°", "capsnet_r3", "capsnet_r1"),
                         ("rotate 30°", "capsnet_r3", "capsnet_r1")}
    first = rows[0]  # 3 rounds minus 1 round on the test set: -0.10 points, -1.31 to +1.11
    assert (first["a"], first["b"], first["set"]) == ("capsnet_r3", "capsnet_r1", "test set")
    assert 100 * first["low"] == pytest.approx(-1.31, abs=0.005)
    assert 100 * first["high"] == pytest.approx(1.11, abs=0.005)
    for row in rows:
        assert row["low"] < row["difference"] < row["high"]
        if row["test"] == "z, unpaired":  # interval and z-test agree at 95%
            assert (row["low"] > 0 or row["high"] < 0) == (row["p"] < 0.05)
        else:  # the paired test is exact McNemar on the disagreements
            a, b = correct[row["a"]][row["set"]], correct[row["b"]][row["set"]]
            assert row["difference"] == pytest.approx(a.mean() - b.mean())
            assert row["p"] == stats.mcnemar(a, b).p


def _tiny_sets(n=20):
    x, y = data.load_fashion_mnist()[1]
    picked = data.balanced_indices(y, n)
    sets = {name: data.transform_images(x[picked], kind, amount, seed=experiment.SEED)
            for name, (kind, amount) in experiment.TEST_SETS.items()}
    return sets, y[picked], x[picked[:10]], y[picked[:10]]


def test_measure_keeps_each_images_prediction_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setattr(experiment, "SHIFTS", (-3, 0, 3))
    run = tmp_path / "capsnet_r3"
    run.mkdir()
    build_capsnet().save(run / "best.keras")  # untrained: any model will do
    sets, labels, sweep_x, sweep_y = _tiny_sets()
    kept = experiment._measure(run, sets, labels, sweep_x, sweep_y, batch_size=10)
    with np.load(run / experiment.PREDICTIONS, allow_pickle=False) as saved:
        assert list(saved["sets"]) == list(sets)
        assert saved["predicted"].shape == (len(sets), len(labels))
        assert np.array_equal(saved["labels"], labels)
        assert list(saved["shifts"]) == [-3, 0, 3]
        assert saved["sweep_predicted"].shape == (3, 10)
        for k, name in enumerate(sets):  # the accuracies are those of the predictions
            assert kept["accuracy"][name] == pytest.approx(np.mean(saved["predicted"][k] == labels))
        for k in range(3):
            assert kept["shift_sweep"]["accuracy"][k] == pytest.approx(
                np.mean(saved["sweep_predicted"][k] == sweep_y))

    def no_loading(path, kinds=None):
        raise AssertionError(f"{path} was loaded again")
    with monkeypatch.context() as m:  # all kept: nothing is measured again
        m.setattr(experiment, "load_classifier", no_loading)
        assert experiment._measure(run, sets, labels, sweep_x, sweep_y, 10) == kept
    # A folder measured before predictions were kept (or with a damaged file) is measured again.
    (run / experiment.PREDICTIONS).write_bytes(b"not a zip")
    assert experiment._measure(run, sets, labels, sweep_x, sweep_y, 10) == kept
    assert experiment._read_predictions(run / experiment.PREDICTIONS, sets) is not None


def test_out_gets_the_predictions_and_a_paired_table(tmp_path, committed):
    # The committed results with made-up answers per image, consistent with each
    # model's accuracy on each set: what the next run of the experiment will write.
    _, results = committed
    runs, out = tmp_path / "runs", tmp_path / "out"
    rng = np.random.default_rng(0)
    n = results["sizes"]["transformed"]
    labels = rng.integers(0, 10, n)
    names = list(results["test_sets"])
    for name, entry in results["variants"].items():
        predicted = []
        for set_name in names:
            right = rng.permutation(n) < round(entry["accuracy"][set_name] * n)
            predicted.append(np.where(right, labels, (labels + 1) % 10))
        (runs / name).mkdir(parents=True)
        experiment._write_predictions(runs / name / experiment.PREDICTIONS,
                                      dict(zip(names, predicted)), labels,
                                      [labels[:5]] * 3, labels[:5])
    experiment._write(out, runs, results)
    for name in results["variants"]:
        assert (out / name / experiment.PREDICTIONS).is_file()
    correct = experiment.load_predictions(out, results)
    assert set(correct) == set(results["variants"]) and set(correct["capsnet_r3"]) == set(names)
    table = (out / "comparisons.md").read_text()
    assert table == experiment.comparison_table(results, correct)
    rows = experiment.comparisons(results, correct)
    assert [row["test"] for row in rows] == ["z, unpaired"] * 4 + ["McNemar, paired"] * 14
    row = rows[4]  # clean images, 3 rounds against the CNN
    a = correct["capsnet_r3"]["clean (same images)"]
    b = correct["baseline_cnn"]["clean (same images)"]
    assert row["difference"] == pytest.approx(a.mean() - b.mean())
    assert row["p"] == stats.mcnemar(a, b).p
    assert "McNemar's exact test" in table and "z-test" in table


def test_load_predictions_needs_every_model_on_the_same_images(tmp_path, committed):
    _, results = committed
    names = list(results["test_sets"])
    for k, name in enumerate(results["variants"]):
        (tmp_path / name).mkdir()
        labels = np.arange(4) + (k == 3)  # the last model: other images
        experiment._write_predictions(tmp_path / name / experiment.PREDICTIONS,
                                      {s: labels for s in names}, labels, [labels], labels)
    assert experiment.load_predictions(tmp_path, results) is None
    (tmp_path / "capsnet_r3_no_decoder" / experiment.PREDICTIONS).unlink()
    assert experiment.load_predictions(tmp_path, results) is None


def test_untrained_couplings_are_the_traces_statistics_and_reproducible(committed):
    x = data.load_fashion_mnist()[1][0][:20]
    first = experiment.untrained_couplings(x, seed=3, batch_size=10)
    assert keras.config.dtype_policy().name == "float32"  # computed in float64, then restored
    assert first == experiment.untrained_couplings(x, seed=3, batch_size=10)
    assert first["n_images"] == 20 and first["n_children_per_image"] == 1152
    strongest = first["per_round"]["predicted_is_strongest"]
    assert len(strongest) == 3 and strongest[0] == 0.0  # round 1: all tied
    # By construction routing favours the longest class capsule even untrained:
    # above 1 in 10, below what the trained model reached.
    trained = committed[1]["couplings"]["per_round"]["predicted_is_strongest"]
    assert 0.1 < strongest[2] < trained[2]
