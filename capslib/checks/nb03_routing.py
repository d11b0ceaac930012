"""Notebook 03_routing's checks: ``check_prediction_vectors`` (u_hat = W u
per child and parent) and ``check_routing`` (routing by agreement, its couplings
and its gradient)."""
import keras
import numpy as np
from keras import ops

from capslib import layers
from capslib import routing as caps_routing
from capslib.checks._core import (_, _check_gradient, _Checker, _exercise_check, _matches,
                                  _np_softmax, _np_squash, _wrong_order)


# -- 5. prediction_vectors ----------------------------------------------------

def _predictions_reference(W, u):
    """capslib's DigitCapsules.predictions with the given W."""
    n_in, n_caps, dims, in_dims = W.shape
    layer = layers.DigitCapsules(n_caps, dims, dtype="float32")
    layer.build((None, n_in, in_dims))
    layer.W.assign(W)
    return keras.ops.convert_to_numpy(layer.predictions(u))


@_exercise_check
def check_prediction_vectors(fn, seed=0):
    """prediction_vectors(W, u): u_hat[b, i, j] = W[i, j] @ u[b, i]."""
    c = _Checker("prediction_vectors", reference=_("capslib's DigitCapsules"))
    rng = np.random.default_rng(seed)

    def verify(n_in, n_caps, dims, in_dims, batch, gradient=False):
        W = rng.normal(size=(n_in, n_caps, dims, in_dims)).astype(np.float32)
        u = rng.normal(size=(batch, n_in, in_dims)).astype(np.float32)
        case = _("W {shape} and u {shape_2}", shape=W.shape, shape_2=u.shape)
        got = c.array(c.run(fn, W.copy(), u.copy(), case=case), case)
        want = _predictions_reference(W, u)
        mistakes = [
            (_("puts the output axes in the wrong order (batch, n_caps, n_in, dims): "
               "u_hat must be (batch, n_in, n_caps, dims)"),
             lambda: np.einsum("ijkd,bid->bjik", W, u)),
            (_("sums over the children: keep one prediction per child i, "
               "shape (batch, n_in, n_caps, dims)"),
             lambda: np.einsum("ijkd,bid->bjk", W, u)),
            (_("uses the same W for every child: child i has its own matrices W[i, j]"),
             lambda: np.einsum("jkd,bid->bijk", W[0], u)),
        ]
        if dims == in_dims:
            mistakes.insert(0, (
                _("uses W transposed (W[i, j].T, contracting the wrong axis of W): "
                  "u_hat[b, i, j] = W[i, j] @ u[b, i] sums over W's last axis (in_dims)"),
                lambda: np.einsum("ijdk,bid->bijk", W, u)))
        c.compare(got, want, case, mistakes=mistakes,
                  shape_rule=_("expected (batch, n_in, n_caps, dims) = {shape}", shape=want.shape),
                  atol=1e-4)
        if gradient:  # the model trains W, and conv layers through u
            def reference(w, x):
                return ops.einsum("ijkd,bid->bijk", w, x)
            _check_gradient(c, lambda w: fn(w, u), W, [lambda w: reference(w, u)],
                            _("with respect to W"))
            _check_gradient(c, lambda x: fn(W, x), u, [lambda x: reference(W, x)],
                            _("with respect to u"))

    verify(3, 2, 4, 4, 2, gradient=True)
    c.ok(_("dims == in_dims: a transposed W would fit the shapes, not the values"))
    verify(5, 2, 4, 3, 2)
    c.ok(_("small sizes: u_hat[b, i, j] = W[i, j] @ u[b, i]"))
    verify(1152, 10, 16, 8, 2)
    c.ok(_("the paper's sizes: (2, 1152, 8) -> (2, 1152, 10, 16)"))
    c.done()


# -- 6. routing ---------------------------------------------------------------

def _np_routing(u_hat, iterations, softmax_axis=2, accumulate=True, squash=True,
                return_s=False, extra_update=False, reset=False, agree_with="v"):
    """Routing by agreement in float64, with switches for the usual mistakes."""
    u = np.asarray(u_hat, np.float64)
    logits = np.zeros(u.shape[:3])
    for r in range(iterations):
        if reset:
            logits = np.zeros(u.shape[:3])
        c = _np_softmax(logits, softmax_axis)
        s = np.einsum("bij,bijk->bjk", c, u)
        v = _np_squash(s) if squash else s
        if r < iterations - 1 or extra_update:
            if agree_with == "children summed":  # one agreement for all children
                agreement = np.broadcast_to(
                    np.einsum("bijk,bjk->bj", u, v)[:, None], logits.shape)
            else:
                agreement = np.einsum("bijk,bjk->bij", u, {"v": v, "s": s}[agree_with])
            logits = logits + agreement if accumulate else agreement
    if extra_update:
        c = _np_softmax(logits, softmax_axis)
    return (s if return_s else v), c


def _swap_pairs(values):
    """(a1, b1, a2, b2, ...) -> (b1, a1, b2, a2, ...)."""
    return tuple(x for i in range(0, len(values), 2) for x in values[i:i + 2][::-1])


def _routing_mistakes(u_hat, iterations_list):
    """(message, variant) pairs; a variant returns v and c for every iteration count."""
    def variant(**switches):
        return lambda: tuple(x for it in iterations_list
                             for x in _np_routing(u_hat, it, **switches))

    def rounds(delta):
        return lambda: tuple(x for it in iterations_list
                             for x in _np_routing(u_hat, max(it + delta, 1)))

    return [
        (_("takes the softmax over the children (axis 1) instead of the parents "
           "(axis 2): each child's coupling coefficients must sum to 1 over the parents"),
         variant(softmax_axis=1)),
        (_("resets the logits b to zero inside the loop, so every round starts again "
           "from uniform couplings: set b to zeros once, before the loop, and add each "
           "round's agreement to it (b = b + agreement)"), variant(reset=True)),
        (_("does not accumulate the logits between rounds: b = agreement must be "
           "b = b + agreement"), variant(accumulate=False)),
        (_("computes the agreement with s instead of v: the agreement is u_hat · v with "
           "the squashed v = squash(s), ops.einsum('bijk,bjk->bij', u_hat, v)"),
         variant(agree_with="s")),
        (_("sums the agreement over the children (u_hat summed over i): each child i has "
           "its own agreement with parent j, u_hat[:, i, j] · v[:, j], "
           "ops.einsum('bijk,bjk->bij', u_hat, v)"), variant(agree_with="children summed")),
        (_("never squashes s: the parents are v = squash(s), and the agreement uses v"),
         variant(squash=False)),
        (_("returns s (the weighted sum) instead of v = squash(s)"), variant(return_s=True)),
        (_("returns c from one round too many: it makes an agreement update after the "
           "last round; return the c that made the final v"), variant(extra_update=True)),
        (_("runs one round too many (iterations off by one): run exactly `iterations` "
           "rounds"), rounds(+1)),
        # b updated with the previous round's v gives the same results.
        (_("runs one round too few (iterations off by one), or updates b with the "
           "previous round's v: run exactly `iterations` rounds, each one c = softmax(b), "
           "v = squash(s), then b = b + u_hat · v with the v just computed"), rounds(-1)),
    ]


def _couplings_sum_to_one(gots):
    for c in gots[1::2]:
        if not np.allclose(np.sum(c, axis=2), 1.0, atol=1e-4):
            return (_("returns coupling coefficients that do not sum to 1 over the parents "
                      "for each child: c = ops.softmax(b, axis=2)"))
    return None


@_exercise_check
def check_routing(fn, seed=0):
    """routing(u_hat, iterations=3) -> (v, c), against capslib's routing_by_agreement."""
    c = _Checker("routing")
    rng = np.random.default_rng(seed)

    def verify(u_hat, iterations_list, case):
        batch, n_in, n_out, d = u_hat.shape
        gots, wants = (), ()
        for it in iterations_list:
            label = _("{case}, iterations={it}", case=case, it=it)
            gots += c.pair(c.run(fn, u_hat.copy(), it, case=label), label, ("v", "c"))
            wants += tuple(keras.ops.convert_to_numpy(x)
                           for x in caps_routing.routing_by_agreement(u_hat, it))
        c.compare(
            gots, wants, case,
            mistakes=[(_wrong_order("vc"), lambda: _swap_pairs(wants)),
                      *_routing_mistakes(u_hat, iterations_list)],
            names=tuple(_("{x} (iterations={it})", x=x, it=it)
                        for it in iterations_list for x in "vc"),
            shape_rule=(_("expected v of shape (batch, n_out, d) = {shape}",
                          shape=(batch, n_out, d)),
                        _("expected c of shape (batch, n_in, n_out) = {shape}",
                          shape=(batch, n_in, n_out))
                        ) * len(iterations_list),
            diagnose=_couplings_sum_to_one)

    u_hat = rng.normal(size=(2, 6, 3, 4)).astype(np.float32)
    verify(u_hat, (1, 2, 3), _("random u_hat (2, 6, 3, 4)"))
    # The model trains through routing: a gradient must reach u_hat (through
    # every round, or only the last weighted sum as capslib does).
    _check_gradient(
        c, lambda x: fn(x, 3)[0], u_hat,
        [lambda x, stop=stop: caps_routing.routing_by_agreement(x, 3, stop)[0]
         for stop in (True, False)],
        _("(of v with respect to u_hat)"))
    for it in (1, 2, 3):
        c.ok(_("iterations={it}: v and c match capslib", it=it))
    default = c.pair(c.run(fn, u_hat.copy(), case=_("routing(u_hat) without iterations")),
                     _("routing(u_hat) without iterations"), ("v", "c"))
    want = caps_routing.routing_by_agreement(u_hat, 3)
    if not all(_matches(g, keras.ops.convert_to_numpy(w), 1e-4, 1e-5)
               for g, w in zip(default, want)):
        c.fail(_("routing(u_hat) without `iterations` differs from routing(u_hat, 3): "
                 "the default must be iterations=3"))
    c.ok(_("default: iterations=3"))

    # Parent 0 hears (1, 0) from children 0 and 1 and the opposite from child 2;
    # parent 1 hears (0, 1) from children 0 and 2 and the opposite from child 1.
    # Routing couples child 1 to parent 0 (c = 0.74) and child 2 to parent 1.
    u_hat = np.zeros((1, 3, 2, 2), np.float32)
    u_hat[0, :, 0] = [[1, 0], [1, 0], [-1, 0]]
    u_hat[0, :, 1] = [[0, 1], [0, -1], [0, 1]]
    verify(u_hat, (3,), _("the hand-made u_hat (1, 3, 2, 2)"))
    c.ok(_("hand-made case: a child that agrees with a parent couples more to it"))
    c.done()
