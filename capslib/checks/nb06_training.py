"""Notebook 06_training's checks: ``check_best_epoch`` (the epoch selected on
the validation loss) and ``check_two_proportion_z_test`` (pooled, two-sided)."""
import math

import numpy as np

from capslib.checks._core import _, _Checker, _exercise_check, _wrong_order


# -- 11. best_epoch -----------------------------------------------------------

def _history(val_loss, val_acc, loss, val_lengths_loss):
    """A history shaped like capslib.train.read_log's (0-based 'epoch' column)."""
    n = len(val_loss)
    return {
        "epoch": [float(e) for e in range(n)],
        "lengths_accuracy": list(np.linspace(0.75, 0.92, n)),
        "loss": list(loss),
        "val_lengths_accuracy": list(val_acc),
        "val_lengths_loss": list(val_lengths_loss),
        "val_loss": list(val_loss),
    }


@_exercise_check
def check_best_epoch(fn, seed=0):
    """best_epoch(history): 1-based epoch of the lowest val_loss (first on ties)."""
    c = _Checker("best_epoch")
    rng = np.random.default_rng(seed)

    def verify(history, case):
        arg = {k: list(v) for k, v in history.items()}
        got = c.array(c.run(fn, arg, case=case), case)
        if got.size != 1:
            c.fail(_("best_epoch returned shape {shape} for {case}: it must return "
                     "one epoch number", shape=got.shape, case=case))
        value = got.item()
        val_loss = np.array(history["val_loss"])
        want = int(np.argmin(val_loss)) + 1
        if value != want:
            mistakes = [
                (_("returns the loss value instead of the epoch number: return the "
                   "(1-based) epoch at which the lowest 'val_loss' occurs"),
                 float(np.min(val_loss))),
                (_("returns a 0-based epoch (a list index, or history['epoch'], which "
                   "counts from 0): the course numbers epochs from 1, add 1"), want - 1),
                (_("picks the epoch with the highest validation loss: use the lowest "
                   "(argmin)"), int(np.argmax(val_loss)) + 1),
                (_("chose the epoch with the best validation accuracy; the course selects "
                   "on validation loss (history['val_loss'])"),
                 int(np.argmax(history["val_lengths_accuracy"])) + 1),
                (_("selects on the training loss ('loss'): select on the validation loss "
                   "('val_loss')"), int(np.argmin(history["loss"])) + 1),
                (_("selects on 'val_lengths_loss' (the margin loss alone): select on "
                   "'val_loss', the total validation loss"),
                 int(np.argmin(history["val_lengths_loss"])) + 1),
                (_("always returns the last epoch: return the epoch with the lowest "
                   "'val_loss'"), len(val_loss)),
                (_("picks the last of tied epochs: on ties take the first (np.argmin does)"),
                 len(val_loss) - int(np.argmin(val_loss[::-1]))),
            ]
            for message, variant in mistakes:
                if variant != want and math.isclose(value, variant):
                    c.fail(_("best_epoch {message}", message=message))
            c.fail(_("best_epoch returned {value!r} for {case}, expected epoch {want} "
                     "(the first epoch with the lowest 'val_loss', counted from 1)",
                     value=value, case=case, want=want))
        if got.dtype.kind not in "iu":
            c.fail(_("best_epoch returns a float ({value!r}) for {case}: return the epoch "
                     "as an int, e.g. int(np.argmin(...)) + 1", value=value, case=case))

    # Every wrong rule picks another epoch here: highest val_loss 1, 0-based 2,
    # right 3, best val accuracy 4, last tie 5, lowest training loss 6,
    # lowest val_lengths_loss 7, last 8.
    verify(_history(val_loss=[0.80, 0.55, 0.42, 0.47, 0.42, 0.50, 0.61, 0.58],
                    val_acc=[0.70, 0.80, 0.84, 0.86, 0.85, 0.83, 0.82, 0.81],
                    loss=[1.00, 0.60, 0.45, 0.38, 0.33, 0.30, 0.31, 0.32],
                    val_lengths_loss=[0.50, 0.40, 0.33, 0.34, 0.32, 0.31, 0.29, 0.30]),
           _("the hand-made history of 8 epochs"))
    c.ok(_("8 epochs with a tie: the first epoch with the lowest val_loss (3)"))
    n = 8
    verify(_history(val_loss=rng.uniform(0.1, 0.5, n), val_acc=rng.uniform(0.8, 0.9, n),
                    loss=rng.uniform(0.1, 0.5, n), val_lengths_loss=rng.uniform(0.1, 0.5, n)),
           _("a random history of 8 epochs"))
    c.ok(_("a random history of 8 epochs"))
    verify(_history([0.3], [0.8], [0.4], [0.2]), _("a history of one epoch"))
    c.ok(_("a single epoch: 1"))
    c.done()


# -- 12. two_proportion_z_test ------------------------------------------------

def _z_test(acc_1, n_1, acc_2, n_2, se="pooled", tail="two", sign=1.0):
    """Two-proportion z-test in pure Python, with switches for the usual mistakes."""
    p = (acc_1 * n_1 + acc_2 * n_2) / (n_1 + n_2)
    variance = {
        "pooled": p * (1 - p) * (1 / n_1 + 1 / n_2),
        "unpooled": acc_1 * (1 - acc_1) / n_1 + acc_2 * (1 - acc_2) / n_2,
        "first only": p * (1 - p) / n_1,
        "second only": p * (1 - p) / n_2,
    }
    if se == "no sqrt":
        z = (acc_1 - acc_2) / variance["pooled"]
    else:
        z = (acc_1 - acc_2) / math.sqrt(variance[se])
    two_sided = math.erfc(abs(z) / math.sqrt(2))
    p_value = {
        "two": two_sided,
        "one": two_sided / 2,
        "one signed": math.erfc(z / math.sqrt(2)) / 2,
        "complement": 1 - two_sided,
        "no abs": math.erfc(z / math.sqrt(2)),
    }[tail]
    return np.float64(sign * z if sign else abs(z)), np.float64(p_value)


@_exercise_check
def check_two_proportion_z_test(fn, seed=0):
    """two_proportion_z_test(acc_1, n_1, acc_2, n_2) -> (z, p), pooled, two-sided."""
    c = _Checker("two_proportion_z_test", reference=_("the pooled two-sided z-test"))
    rng = np.random.default_rng(seed)

    def verify(acc_1, n_1, acc_2, n_2, case):
        args = (acc_1, n_1, acc_2, n_2)
        got = c.pair(c.run(fn, *args, case=case), case, ("z", "p"))
        for x, name in zip(got, "zp"):
            if x.size != 1:
                c.fail(_("two_proportion_z_test returned {name} of shape {shape} for "
                         "{case}: {name} must be one number", name=name, shape=x.shape, case=case))
        got = tuple(np.float64(x.item()) for x in got)
        one_sample = (_("uses the variance of one sample only: the standard error counts "
                        "both, sqrt(p (1 - p) (1/n_1 + 1/n_2))"))
        one_sided = (_("returns a one-sided p-value (half the two-sided one): the test is "
                       "two-sided, p = erfc(|z| / sqrt(2))"))
        c.compare(
            got, _z_test(*args), case, names=("z", "p"),
            mistakes=[
                (_wrong_order("zp"), lambda: _z_test(*args)[::-1]),
                (one_sided, lambda: _z_test(*args, tail="one")),
                (one_sided, lambda: _z_test(*args, tail="one signed")),
                (_("uses the unpooled standard error: under the null hypothesis both "
                   "accuracies are equal, so pool them, p = (acc_1 n_1 + acc_2 n_2) / "
                   "(n_1 + n_2)"), lambda: _z_test(*args, se="unpooled")),
                (_("treats the accuracies as percentages (divides them by 100): they are "
                   "fractions in [0, 1]"),
                 lambda: _z_test(acc_1 / 100, n_1, acc_2 / 100, n_2)),
                (_("forgets the square root in the standard error: se = sqrt(p (1 - p) "
                   "(1/n_1 + 1/n_2))"), lambda: _z_test(*args, se="no sqrt")),
                (one_sample, lambda: _z_test(*args, se="first only")),
                (one_sample, lambda: _z_test(*args, se="second only")),
                (_("returns the p-value of the wrong tail (1 - p): p = erfc(|z| / sqrt(2)) "
                   "is small when |z| is large"), lambda: _z_test(*args, tail="complement")),
                (_("returns a p-value of the wrong tail, above 1 for a negative z: use "
                   "|z|, p = erfc(|z| / sqrt(2))"), lambda: _z_test(*args, tail="no abs")),
                (_("returns |z|: keep the sign, z = (acc_1 - acc_2) / se is negative when "
                   "acc_1 < acc_2"), lambda: _z_test(*args, sign=0.0)),
                (_("computes acc_2 - acc_1: z = (acc_1 - acc_2) / se"),
                 lambda: _z_test(*args, sign=-1.0)),
            ],
            hint=(_(" Keep the accuracies as fractions in [0, 1] (percentages make "
                    "p (1 - p) negative).")),
            rtol=1e-3, atol=1e-7)

    verify(0.8718, 5000, 0.8499, 10000, _("acc 0.8718 on 5000 vs 0.8499 on 10000"))
    c.ok(_("0.8718 on 5000 images vs 0.8499 on 10000: z and p match"))
    verify(0.9, 2000, 0.9, 8000, _("equal accuracies 0.9 on 2000 and 8000"))
    c.ok(_("equal accuracies: z = 0 and p = 1"))
    verify(0.8499, 10000, 0.8718, 5000, _("acc 0.8499 on 10000 vs 0.8718 on 5000"))
    c.ok(_("acc_1 < acc_2: a negative z, the same p"))
    verify(float(rng.uniform(0.8, 0.9)), int(rng.integers(1000, 10000)),
           float(rng.uniform(0.8, 0.9)), int(rng.integers(1000, 10000)),
           _("random accuracies and sizes"))
    c.ok(_("random accuracies and sizes"))
    c.done()
