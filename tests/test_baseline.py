import json

import numpy as np
import pytest

from capslib.baseline import BaselineCNN, build_baseline, class_scores, compile_baseline
from capslib.model import ModelFileError, build_capsnet, load_capsnet, load_classifier


@pytest.fixture(scope="module")
def baseline():
    return build_baseline()


def test_parameter_count_is_the_papers_35_4m(baseline):
    # Sabour et al. 2017, section 5: "35.4M parameters".
    assert baseline.count_params() == 35_445_522
    assert [layer.name for layer in baseline.convs] == ["conv1", "conv2", "conv3"]
    assert [c.filters for c in baseline.convs] == [256, 256, 128]


def test_the_first_dense_layer_holds_most_parameters(baseline):
    # What notebook 08 and the module docstring say: fc1 sees all 28 x 28 x 128 outputs of conv3.
    fc1 = baseline.dense[0]
    assert fc1.name == "fc1" and fc1.count_params() == 28 * 28 * 128 * 328 + 328 == 32_915_784
    assert [c.count_params() for c in baseline.convs] == [6_656, 1_638_656, 819_328]


def test_takes_images_or_the_capsnet_dict(baseline):
    x = np.random.default_rng(0).random((3, 28, 28, 1), dtype="float32")
    plain = baseline(x)["probabilities"]
    as_dict = baseline({"image": x, "label": np.zeros(3, "int32")})["probabilities"]
    assert tuple(plain.shape) == (3, 10)
    np.testing.assert_allclose(np.asarray(plain), np.asarray(as_dict), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(plain).sum(axis=1), 1.0, rtol=1e-5)


def test_dropout_only_while_training(baseline):
    x = np.random.default_rng(1).random((2, 28, 28, 1), dtype="float32")
    a, b = (np.asarray(baseline(x)["probabilities"]) for _ in range(2))
    np.testing.assert_array_equal(a, b)
    c = np.asarray(baseline(x, training=True)["probabilities"])
    assert not np.allclose(a, c)


def test_refuses_images_of_another_shape(baseline):
    with pytest.raises(ValueError, match=r"shape \(batch, 28, 28, 1\), got shape \(2, 28, 28\)"):
        baseline(np.zeros((2, 28, 28), "float32"))


def test_class_scores_reads_either_model():
    probs = np.eye(10, dtype="float32")[:2]
    np.testing.assert_array_equal(class_scores({"probabilities": probs}), probs)
    np.testing.assert_array_equal(class_scores({"lengths": probs, "poses": None}), probs)


def test_saved_and_loaded_in_safe_mode(tmp_path):
    model = BaselineCNN(conv_filters=(8, 8, 4), dense_units=(16, 8))
    model.build((None, 28, 28, 1))
    compile_baseline(model)
    path = tmp_path / "cnn.keras"
    model.save(path)
    loaded = load_classifier(path)
    assert isinstance(loaded, BaselineCNN)
    assert json.dumps(loaded.get_config()) == json.dumps(model.get_config())
    x = np.random.default_rng(2).random((2, 28, 28, 1), dtype="float32")
    np.testing.assert_allclose(np.asarray(loaded(x)["probabilities"]),
                               np.asarray(model(x)["probabilities"]), rtol=1e-6)
    with pytest.raises(ModelFileError, match="BaselineCNN 'baseline_cnn'.*but not a CapsNet"):
        load_capsnet(path)


def test_load_classifier_still_loads_a_capsnet(tmp_path):
    path = tmp_path / "caps.keras"
    build_capsnet(routing_iterations=1, decoder=False).save(path)
    assert type(load_classifier(path)).__name__ == "CapsNet"


def test_a_run_folder_loads_as_its_best_model(tmp_path):
    # capslib.loading: a .keras file, a shipped folder or a run folder (its best.keras).
    model = BaselineCNN(conv_filters=(8, 8, 4), dense_units=(16, 8))
    model.build((None, 28, 28, 1))
    model.save(tmp_path / "best.keras")
    assert isinstance(load_classifier(tmp_path), BaselineCNN)
    with pytest.raises(ModelFileError, match="but not a CapsNet"):
        load_capsnet(tmp_path)
