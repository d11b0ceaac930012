"""Notebook 04_margin_loss's checks: ``check_margin_loss`` (one loss per
example, its parameters and gradient) and ``check_capsule_lengths`` (a safe norm
per capsule)."""
import keras
import numpy as np

from capslib import losses
from capslib import ops as caps_ops
from capslib.checks._core import (_, _check_gradient, _Checker, _exercise_check, _gradient,
                                  _np_norm, _np_softmax)


# -- 7. margin_loss -----------------------------------------------------------

def _np_margin(t, lengths, m_plus=0.9, m_minus=0.1, lambda_=0.5, present_weight=1.0,
               absent_weight=None, reduce="sum", square=True, clip=True):
    """Margin loss in float64, with switches for the usual mistakes."""
    t, lengths = np.asarray(t, np.float64), np.asarray(lengths, np.float64)
    f = (lambda x: np.maximum(x, 0.0)) if clip else (lambda x: x)
    g = np.square if square else (lambda x: x)
    absent_weight = lambda_ if absent_weight is None else absent_weight
    terms = (present_weight * t * g(f(m_plus - lengths))
             + absent_weight * (1 - t) * g(f(lengths - m_minus)))
    per_example = terms.mean(-1) if reduce == "mean" else terms.sum(-1)
    return {"batch_mean": per_example.mean(), "batch_sum": per_example.sum()}.get(
        reduce, per_example)


@_exercise_check
def check_margin_loss(fn, seed=0):
    """margin_loss(targets, lengths, m_plus, m_minus, lambda_) -> one loss per example."""
    c = _Checker("margin_loss")
    rng = np.random.default_rng(seed)

    def verify(t, lengths, case, describe=None, **params):
        got = c.array(c.run(fn, t.copy(), lengths.copy(), case=case, **params), case)
        want = keras.ops.convert_to_numpy(losses.margin_loss(t, lengths, **params))
        m_plus, m_minus = params.get("m_plus", 0.9), params.get("m_minus", 0.1)
        lambda_ = params.get("lambda_", 0.5)

        def variant(t=t, **switches):
            kw = dict(m_plus=m_plus, m_minus=m_minus, lambda_=lambda_)
            return lambda: _np_margin(t, lengths, **{**kw, **switches})

        no_max = (_("forgets max(0, ·) (ops.relu or ops.maximum): a true capsule longer "
                    "than m_plus or an absent one shorter than m_minus must cost exactly "
                    "0, not be penalised or rewarded with a negative loss"))
        mistakes = [
            (_("applies lambda_ to both terms: only the absent classes' term is "
               "multiplied by lambda_"), variant(present_weight=lambda_)),
            (_("applies lambda_ to the present class: lambda_ down-weights only the "
               "absent classes' term"), variant(present_weight=lambda_, absent_weight=1.0)),
            (_("averages over the classes: sum the per-class terms "
               "(ops.sum(..., axis=-1))"), variant(reduce="mean")),
            (_("returns the batch mean (one number): return one loss per example, "
               "shape (batch,)"), variant(reduce="batch_mean")),
            (_("returns the sum over the batch (one number): return one loss per "
               "example, shape (batch,)"), variant(reduce="batch_sum")),
            (_("forgets the square: each term is max(0, ...)^2"), variant(square=False)),
            (no_max, variant(clip=False)),
            (no_max, variant(clip=False, square=False)),
            (_("swaps m_plus and m_minus: the true class is pushed above m_plus (0.9), "
               "the absent ones below m_minus (0.1)"), variant(m_plus=m_minus, m_minus=m_plus)),
            (_("inverts the targets: T_k = 1 marks the true class (the m_plus term), "
               "0 the absent ones"), variant(t=1.0 - t)),
        ]
        if params:
            mistakes.append((_("ignores m_plus, m_minus or lambda_: use the arguments, "
                               "not fixed numbers"), lambda: _np_margin(t, lengths)))

        def diagnose(gots):
            if np.min(gots[0]) < -1e-6:
                return _("gives a negative loss: ") + no_max
            if describe:
                i = int(np.argmax(np.abs(gots[0] - want)))
                return (_("gives {got:.4g} for the example '{example}', "
                          "expected {want:.4g}",
                          got=gots[0][i], example=describe[i], want=want[i]))
            return None

        c.compare(got, want, case, mistakes=mistakes, diagnose=diagnose,
                  shape_rule=_("it must return one loss per example, shape (batch,) = "
                               "{shape}", shape=want.shape))

    cases = [  # (true class, lengths, description printed on success)
        (0, [0.9, 0.1, 0.1, 0.1], _("true class at 0.9, the others at 0.1: loss 0")),
        (1, [0.0, 1.0, 0.0, 0.0], _("true class at 1.0 (past m+), the others at 0: loss 0")),
        (2, [0.1, 0.1, 0.5, 0.1], _("true class at 0.5: loss (0.9 - 0.5)^2 = 0.16")),
        (3, [0.1, 0.6, 0.1, 0.9], _("an absent class at 0.6: loss 0.5 (0.6 - 0.1)^2 = 0.125")),
        (0, [0.5, 0.1, 0.6, 0.1], _("both terms: 0.16 + 0.125 = 0.285")),
    ]
    t = np.eye(4, dtype=np.float32)[[k for k, _, _ in cases]]
    lengths = np.array([x for _, x, _ in cases], np.float32)
    texts = [text for _, _, text in cases]
    verify(t, lengths, _("the hand-made batch (5, 4)"), describe=texts)
    # The model trains through the loss: a gradient must reach the lengths (on
    # lengths away from m_plus and m_minus, where max(0, .) has no kink).
    grad_rng = np.random.default_rng(seed + 1)
    grad_t = np.eye(10, dtype=np.float32)[grad_rng.integers(0, 10, size=4)]
    grad_lengths = grad_rng.choice([0.05, 0.3, 0.5, 0.7, 0.95], size=(4, 10)).astype(
        np.float32)
    _check_gradient(c, lambda x: fn(grad_t, x), grad_lengths,
                    [lambda x: losses.margin_loss(grad_t, x)], _("with respect to the lengths"))
    for text in texts:
        c.ok(text)
    t = np.eye(10, dtype=np.float32)[rng.integers(0, 10, size=6)]
    lengths = rng.uniform(0.0, 1.0, size=(6, 10)).astype(np.float32)
    verify(t, lengths, _("a random batch (6, 10)"))
    c.ok(_("a random batch (6, 10)"))
    verify(t, lengths, _("a random batch (6, 10) with m_plus=0.8, m_minus=0.2, lambda_=0.25"),
           m_plus=0.8, m_minus=0.2, lambda_=0.25)
    c.ok(_("other m_plus, m_minus and lambda_ are used"))
    c.done()


# -- 8. capsule_lengths -------------------------------------------------------

@_exercise_check
def check_capsule_lengths(fn, seed=0):
    """capsule_lengths(poses) -> (batch, n_caps), like capslib.ops.safe_norm."""
    c = _Checker("capsule_lengths")
    rng = np.random.default_rng(seed)
    nan_grad = (_("gives a NaN gradient at a zero capsule: put a small epsilon inside the "
                  "square root, ops.sqrt(ops.sum(ops.square(poses), axis=-1) + epsilon) "
                  "(like capslib.ops.safe_norm)"))

    def verify(poses, case, atol=1e-5):
        got = c.array(c.run(fn, poses.copy(), case=case), case)
        want = keras.ops.convert_to_numpy(caps_ops.safe_norm(poses, axis=-1))
        c.compare(
            got, want, case,
            mistakes=[
                (_("computes the norm over the wrong axis (over the capsules, axis 1): a "
                   "capsule's length is the norm of its own pose, axis=-1"),
                 lambda: _np_norm(poses, axis=1)),
                (_("returns the squared length: take the square root (ops.sqrt)"),
                 lambda: np.sum(np.square(poses, dtype=np.float64), axis=-1)),
                (_("applies a softmax to the lengths: the lengths themselves are the "
                   "class scores"), lambda: _np_softmax(_np_norm(poses), axis=-1)),
            ],
            shape_rule=_("expected (batch, n_caps) = {shape} (no keepdims)", shape=want.shape),
            atol=atol)

    verify(rng.normal(0, 0.3, size=(3, 10, 16)).astype(np.float32),
           _("class capsules (3, 10, 16)"))
    c.ok(_("a batch of class capsules (3, 10, 16)"))
    verify(rng.normal(0, 0.3, size=(2, 5, 5)).astype(np.float32), _("poses (2, 5, 5)"))
    c.ok(_("as many capsules as dimensions (2, 5, 5)"))
    poses = rng.normal(0, 0.3, size=(2, 4, 3)).astype(np.float32)
    poses[0, 1] = 0.0
    # Epsilons differ between students: the zero capsule's length only needs
    # to be about 0.
    verify(poses, _("poses (2, 4, 3) with a zero capsule"), atol=1e-3)
    if not np.all(np.isfinite(_gradient(fn, poses, _("your {name}", name=c.name)))):
        c.fail("capsule_lengths " + nan_grad)
    c.ok(_("zero capsule: a length of about 0 and a finite gradient"))
    poses = rng.normal(0, 0.3, size=(2, 4, 3)).astype(np.float32)
    _check_gradient(c, fn, poses, [lambda p: caps_ops.safe_norm(p, axis=-1)],
                    _("on random poses (2, 4, 3)"))
    c.ok(_("its gradient matches capslib's"))
    c.done()
