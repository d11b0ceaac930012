"""One trained CapsNet routed with 1, 2 and 3 rounds (capslib.rounds, notebook 08): the same
weights, the committed table pinned to the committed answers and to the shipped model."""
import json

import numpy as np
import pytest

import capslib
from capslib import pretrained, rounds


@pytest.fixture(scope="module")
def shipped():
    if not pretrained.available():
        pytest.skip("no shipped model")
    return pretrained.load_pretrained()


def test_round_r_is_the_answer_of_the_same_weights_built_with_r_rounds(shipped):
    images = capslib.data.load_fashion_mnist()[1][0][:40]
    per_round = rounds.lengths_per_round(shipped, images, batch_size=16)
    assert per_round.shape == (3, 40, 10) and per_round.dtype == np.float32
    for r in (1, 2, 3):
        twin = capslib.model.CapsNet.from_config({**shipped.get_config(), "routing_iterations": r})
        twin.build((None, 28, 28, 1))
        twin.set_weights(shipped.get_weights())
        lengths = twin.predict(images, verbose=0)["lengths"]
        np.testing.assert_allclose(per_round[r - 1], lengths, atol=1e-5)
    assert np.abs(per_round[0] - per_round[2]).max() > 1e-3  # the rounds do differ
    with pytest.raises(ValueError, match="28"):
        rounds.lengths_per_round(shipped, np.zeros((2, 20, 20, 1), "float32"))
    with pytest.raises(ValueError, match="no images"):
        rounds.lengths_per_round(shipped, np.zeros((0, 28, 28, 1), "float32"))


@pytest.mark.backend_free
def test_comparisons_are_paired_and_holm_corrected():
    labels = np.array([0, 1, 2, 3] * 25)
    answers = np.stack([labels.copy(), labels.copy(), labels.copy()]).astype(np.int8)
    answers[0, :20] = 9  # 1 round: 20 wrong; 2 rounds: 5 wrong; 3 rounds: all right
    answers[1, :5] = 9
    rows = rounds.comparisons({"clean": answers}, labels)
    assert [(r["a"], r["b"]) for r in rows] == [(3, 1), (3, 2)]
    first = rows[0]
    assert first["acc_a"] == 1.0 and first["acc_b"] == 0.8 and first["changed"] == 0.2
    assert first["difference"] == pytest.approx(0.2) and first["low"] < 0.2 < first["high"]
    assert first["p"] == pytest.approx(2 * 0.5 ** 20) and first["holm"] == pytest.approx(2 * first["p"])
    with pytest.raises(ValueError, match="answers for"):
        rounds.comparisons({"clean": answers[:, :10]}, labels)
    with pytest.raises(ValueError, match="answers of 2 rounds"):
        rounds.comparisons({"clean": answers[:2]}, labels)


@pytest.mark.backend_free
def test_the_committed_table_is_what_its_answers_give():
    results, predicted, labels = rounds.load()
    assert results["n"] == len(labels) == 10_000 and set(predicted) == set(
        capslib.experiment.TEST_SETS)
    assert all(a.shape == (3, 10_000) for a in predicted.values())
    again = rounds.comparisons(predicted, labels)
    assert len(again) == len(results["comparisons"]) == 14
    for row, kept in zip(again, results["comparisons"]):
        for key, value in row.items():
            assert kept[key] == (pytest.approx(value) if isinstance(value, float) else value)
    readme = (capslib.experiment.committed_results(rounds.COMMITTED) / "README.md").read_text()
    assert rounds.table(results["comparisons"]) in readme and results["command"] in readme


def test_the_committed_answers_are_the_shipped_models(shipped):
    results, predicted, labels = rounds.load()
    sets, again_labels = rounds.test_sets(results["n"], names=("clean (same images)", "rotate 30°"))
    np.testing.assert_array_equal(again_labels, labels)
    picked = np.arange(0, 10_000, 50)  # 200 images of each set, spread over the classes
    for name in ("clean (same images)", "rotate 30°"):
        answers = rounds.measure(shipped, {name: sets[name][picked]}, verbose=False)[name]
        # float32 sums may order differently on another processor: a near-tie may flip
        assert np.mean(answers != predicted[name][:, picked]) <= 0.01, name


@pytest.mark.backend_free
def test_the_paired_figure_marks_what_survives():
    rows = [dict(set="a", a=3, b=1, difference=0.03, low=0.01, high=0.05, holm=0.001),
            dict(set="b", a=3, b=1, difference=0.0, low=-0.02, high=0.02, holm=1.0)]
    fig = capslib.viz.plot_paired_differences(rows, title="t")
    ax = fig.axes[0]
    named = dict(zip(ax.get_yticks(), (t.get_text() for t in ax.get_yticklabels())))
    assert [named[y] for y in sorted(named, reverse=True)] == ["a: 3 vs 1", "b: 3 vs 1"]
    filled, empty = ax.lines[-3], ax.lines[-2]  # the two marker sets, then the zero line
    assert list(filled.get_xdata()) == [3.0] and list(empty.get_xdata()) == [0.0]
    json.dumps(rows)  # the rows are plain data (results.json holds them)
