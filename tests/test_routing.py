import numpy as np
import pytest
from keras import ops

from backend_utils import gradient, numpy
from capslib.ops import squash
from capslib.routing import routing_by_agreement


def random_u_hat(batch=2, n_in=12, n_out=3, dims=4, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, n_in, n_out, dims)).astype("float32")


@pytest.mark.parametrize("iterations", [1, 2, 3, 5])
def test_shapes_and_couplings_sum_to_one(iterations):
    u_hat = random_u_hat()
    v, c = routing_by_agreement(u_hat, iterations)
    assert tuple(v.shape) == (2, 3, 4) and tuple(c.shape) == (2, 12, 3)
    np.testing.assert_allclose(numpy(ops.sum(c, axis=2)), 1.0, atol=1e-6)
    assert np.all(np.linalg.norm(numpy(v), axis=-1) < 1)


def test_one_iteration_is_uniform_coupling():
    u_hat = random_u_hat()
    v, c = routing_by_agreement(u_hat, 1)
    np.testing.assert_allclose(numpy(c), 1 / 3, atol=1e-7)
    np.testing.assert_allclose(numpy(v), numpy(squash(u_hat.sum(axis=1) / 3)), rtol=1e-5)


def test_matches_procedure_1_written_in_numpy():
    u_hat = random_u_hat(seed=3).astype("float64")
    b = np.zeros(u_hat.shape[:3])
    for r in range(3):
        c = np.exp(b) / np.exp(b).sum(axis=2, keepdims=True)
        s = np.einsum("bij,bijk->bjk", c, u_hat)
        n2 = (s ** 2).sum(-1, keepdims=True)
        v = n2 / (1 + n2) * s / np.sqrt(n2)
        b = b + np.einsum("bijk,bjk->bij", u_hat, v)
    v_lib, c_lib = routing_by_agreement(u_hat.astype("float32"), 3)
    np.testing.assert_allclose(numpy(v_lib), v, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(numpy(c_lib), c, rtol=1e-4, atol=1e-6)


def test_agreeing_parent_gains_coupling_with_iterations():
    # Parent 0 gets 8 predictions that agree; parent 1 gets 8 orthogonal ones.
    rng = np.random.default_rng(4)
    u_hat = np.zeros((1, 8, 2, 8), dtype="float32")
    u_hat[0, :, 0, 0] = 1.0 + 0.05 * rng.normal(size=8)
    u_hat[0, :, 1, :] = np.eye(8)
    couplings = [float(numpy(routing_by_agreement(u_hat, r)[1])[0, :, 0].mean())
                 for r in range(1, 5)]
    assert couplings[0] == pytest.approx(0.5)
    assert all(b > a for a, b in zip(couplings, couplings[1:])), couplings
    assert couplings[-1] > 0.6


def test_inner_iterations_pass_no_gradient():
    """With the default, the gradient equals that of one weighted sum whose
    couplings are constants; back-propagating through routing differs."""
    u_hat = random_u_hat(batch=1, n_in=6, n_out=2, dims=3, seed=5)
    _, c = routing_by_agreement(u_hat, 3)
    c_const = numpy(c)

    def fixed(u):
        return squash(ops.einsum("bij,bijk->bjk", ops.convert_to_tensor(c_const), u))

    g_default = gradient(lambda u: routing_by_agreement(u, 3)[0], u_hat)
    g_fixed = gradient(fixed, u_hat)
    g_full = gradient(lambda u: routing_by_agreement(u, 3, stop_inner_gradients=False)[0], u_hat)
    np.testing.assert_allclose(g_default, g_fixed, rtol=1e-4, atol=1e-6)
    assert not np.allclose(g_default, g_full, rtol=1e-3, atol=1e-5)
    assert np.all(np.isfinite(g_full))


@pytest.mark.parametrize("bad", [0, -1])
def test_rejects_bad_iterations(bad):
    with pytest.raises(ValueError, match="iterations"):
        routing_by_agreement(random_u_hat(), bad)


def test_rejects_bad_shape():
    with pytest.raises(ValueError, match="batch, n_in, n_out, d_out"):
        routing_by_agreement(np.zeros((2, 3, 4), "float32"))


def test_routing_rounds_end_where_routing_by_agreement_ends():
    from capslib.routing import routing_rounds
    u_hat = np.random.default_rng(0).normal(size=(2, 12, 4, 5)).astype("float32")
    rounds = list(routing_rounds(u_hat, 3))
    assert len(rounds) == 3
    np.testing.assert_allclose(np.asarray(rounds[0][1]), 0.25)  # round 1: uniform couplings
    v, c = routing_by_agreement(u_hat, 3)
    np.testing.assert_allclose(np.asarray(rounds[-1][0]), np.asarray(v), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(rounds[-1][1]), np.asarray(c), rtol=1e-6)


def test_capsnet_routing_trace_shapes_and_last_round():
    from capslib.model import build_capsnet
    model = build_capsnet(routing_iterations=2, decoder=False)
    x = np.random.default_rng(1).random((3, 28, 28, 1), dtype="float32")
    couplings, child_lengths, lengths = model.routing_trace(x)
    assert couplings.shape == (2, 3, 1152, 10)
    assert child_lengths.shape == (3, 1152) and lengths.shape == (3, 10)
    assert np.all((child_lengths >= 0) & (child_lengths < 1))
    np.testing.assert_allclose(couplings[-1], model.coupling_coefficients(x), atol=1e-6)
    np.testing.assert_allclose(lengths, np.asarray(model(x)["lengths"]), atol=1e-6)
