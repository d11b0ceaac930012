"""The routing experiment (notebook 08) end to end, on a handful of images."""
import json
import os

import numpy as np
import pytest

from capslib import experiment
from capslib.__main__ import main
from capslib.runs import RunLock


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setitem(experiment.SIZES, "quick", dict(
        train=dict(epochs=1, train_limit=32, val_size=40, test_limit=30),
        transformed=20, sweep=10))
    monkeypatch.setattr(experiment, "SHIFTS", (-3, 0, 3))
    # Two of the four models keep it short (notebook 08 runs all four under CI).
    monkeypatch.setattr(experiment, "VARIANTS", {
        k: experiment.VARIANTS[k] for k in ("baseline_cnn", "capsnet_r3")})


@pytest.mark.heavy
def test_experiment_trains_measures_and_writes_results(tmp_path, tiny, monkeypatch):
    out, runs = tmp_path / "results", tmp_path / "runs"
    results = experiment.run_experiment("quick", runs, out, verbose=0, command="the command")
    assert list(results["variants"]) == list(experiment.VARIANTS)
    params = {k: v["metrics"]["parameters"] for k, v in results["variants"].items()}
    assert params == {"baseline_cnn": 35_445_522, "capsnet_r3": 8_215_568}
    n = results["sizes"]["transformed"]  # at most 20: the 30 test images lack some classes
    assert 10 <= n <= 20 and results["test_sets"]["shift 4 px"]["n"] == n
    for entry in results["variants"].values():
        assert set(entry["accuracy"]) == set(experiment.TEST_SETS)
        # Accuracies are whole multiples of 1 / n.
        assert all(0 <= a <= 1 and abs(n * a - round(n * a)) < 1e-9
                   for a in entry["accuracy"].values())
        assert len(entry["shift_sweep"]["accuracy"]) == 3
        assert entry["metrics"]["n_test"] == 30 and entry["metrics"]["n_train"] == 32
    couplings = results["couplings"]
    assert couplings["n_images"] == 30 and couplings["n_children_per_image"] == 1152
    entropy = couplings["per_round"]["entropy"]
    assert len(entropy) == 3
    assert entropy[0] == pytest.approx(np.log(10), abs=1e-5)  # round 1 is uniform
    assert all(e <= np.log(10) + 1e-5 for e in entropy)

    written = json.loads((out / "results.json").read_text())
    assert written["command"] == "the command" and written["sizes"]["transformed"] == n
    readme = (out / "README.md").read_text()
    assert "the command" in readme and "| CapsNet, 3 routing rounds | 8,215,568 |" in readme
    for name in experiment.VARIANTS:
        assert (out / name / "metrics.json").is_file() and (out / name / "log.csv").is_file()

    # Run again (as after an interruption): nothing is trained or measured twice.
    def no_loading(path, kinds=None):
        raise AssertionError(f"{path} was loaded again")
    monkeypatch.setattr(experiment, "load_classifier", no_loading)
    again = experiment.run_experiment("quick", runs, out, verbose=0, command="the command")
    assert again["variants"]["capsnet_r3"]["accuracy"] == results["variants"]["capsnet_r3"]["accuracy"]
    assert again["couplings"] == results["couplings"]


def test_load_results_says_how_to_make_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m capslib experiment"):
        experiment.load_results(tmp_path)


def test_committed_results_are_found_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = experiment.committed_results()
    assert folder == experiment.REPO_ROOT / "results" / "routing-class"
    results = experiment.load_results(folder)
    assert list(results["variants"]) == list(experiment.VARIANTS)
    assert list(results["test_sets"]) == list(experiment.TEST_SETS)
    assert results["command"].startswith("python -m capslib experiment")
    for name, entry in results["variants"].items():
        assert entry["metrics"]["n_test"] == results["sizes"]["n_test"] == 10_000
        assert (folder / name / "metrics.json").is_file()


@pytest.mark.parametrize("where", ["a file", "below a file"])
def test_an_unwritable_out_is_refused_before_any_training(tmp_path, capsys, where):
    # Before: the four models were trained first, then writing the results failed.
    file = tmp_path / "results.txt"
    file.write_text("x")
    out = file if where == "a file" else file / "routing"
    runs = tmp_path / "runs"
    assert main(["experiment", "--profile", "quick", "--runs-dir", str(runs),
                 "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {file}") and "--out" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert os.listdir(runs) == []  # no model was trained


def test_the_experiments_refusal_names_its_own_flag(tmp_path, capsys):
    runs = tmp_path / "runs"
    (runs / "baseline_cnn").mkdir(parents=True)
    with RunLock(runs / "baseline_cnn"):
        assert main(["experiment", "--profile", "quick", "--runs-dir", str(runs),
                     "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "is in use by another job" in err and "another --runs-dir" in err
    assert "--run-dir" not in err.replace("--runs-dir", "")


def test_an_interrupted_session_counts_in_the_total_time(tmp_path, monkeypatch):
    runs = tmp_path / "runs"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr("capslib.train.train", interrupted)
    with pytest.raises(KeyboardInterrupt):
        experiment.run_experiment("quick", runs, tmp_path / "out")
    first = json.loads((runs / "elapsed.json").read_text())["seconds"]
    assert first > 0
    with pytest.raises(KeyboardInterrupt):
        experiment.run_experiment("quick", runs, tmp_path / "out")
    assert json.loads((runs / "elapsed.json").read_text())["seconds"] > first
