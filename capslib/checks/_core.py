"""The checker machinery the exercises' checks share (``capslib.checks``).

``_Checker`` runs a student's function, compares its result with a reference,
names a known mistake or the largest error, and prints one ``✓`` line per case;
``_exercise_check`` turns a check into a public one (``CheckFailed`` for a
mistake, the student's own errors with a traceback cut to the student's code);
``_gradient`` differentiates a student's function with the active backend.

Every sentence a student can read is written ``_("... {name} ...", name=value)``:
``_`` is the marker a translation catalog is extracted by (``pybabel extract``,
``xgettext --keyword=_``), with the values named, never pasted in. It
translates nothing yet.
"""
import functools

import keras
import numpy as np
from keras import ops


def _(message, /, **values):
    """A student-facing message, marked for a translation catalog; ``{name}`` fields
    filled in from ``values``. Today it returns the message as written."""
    return message.format(**values) if values else message


_USE_KERAS_OPS = (
    _("write it with keras.ops (ops.sum, ops.square, ops.sqrt, ops.einsum, ...) instead "
      "of NumPy: NumPy functions cut the gradient, and the model is trained through "
      "this step"))


class CheckFailed(AssertionError):
    """A check found a mistake; the message names it in plain words.

    IPython (Jupyter) calls ``_render_traceback_`` instead of printing a
    traceback: the student sees ``CheckFailed: <message>`` and nothing of
    this module's code. nbgrader still sees an error output (ename
    ``CheckFailed``), so the check cell scores 0.
    """

    def _render_traceback_(self):
        return [f"\x1b[0;31m{type(self).__name__}\x1b[0m: {self}"]


def _student_part(tb):
    """The part of a traceback inside the student's function: what follows the
    last frame of ``_Checker.run`` or ``_gradient`` (the calls of that function),
    or all of it when the error did not come from the student's code."""
    calls = (_Checker.run.__code__, _gradient.__code__)
    start, entry = tb, tb
    while entry is not None:
        if entry.tb_frame.f_code in calls and entry.tb_next is not None:
            start = entry.tb_next
        entry = entry.tb_next
    return start


def _exercise_check(check):
    """A public check: its failures are ``CheckFailed``; an error raised in the
    student's function (``NotImplementedError`` from the stub included) goes
    on unchanged, with a traceback that shows the student's code, not this
    module's (whose source would show the wording of other mistakes)."""
    @functools.wraps(check)
    def wrapper(*args, **kwargs):
        __tracebackhide__ = True  # noqa: F841  (IPython and pytest skip this frame)
        try:
            return check(*args, **kwargs)
        except CheckFailed:
            raise
        except Exception as e:
            tb = _student_part(e.__traceback__)
            if tb is e.__traceback__:
                raise  # not from the student's function: a bug here, shown whole
            raise e.with_traceback(tb)
    return wrapper


# -- Shared machinery ---------------------------------------------------------

def _to_numpy(x):
    """A result (NumPy, backend tensor, Python number, list of those) as NumPy."""
    if isinstance(x, (list, tuple)):
        return np.stack([_to_numpy(e) for e in x]) if len(x) else np.asarray(x)
    if isinstance(x, np.ndarray):
        return x  # kept as is: the identity matters for the "new array" checks
    return np.asarray(ops.convert_to_numpy(x))


def _matches(a, b, rtol, atol, equal_nan=False):
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and bool(np.allclose(
        a.astype(np.float64), b.astype(np.float64), rtol=rtol, atol=atol,
        equal_nan=equal_nan))


def _as_tuple(x):
    return tuple(x) if isinstance(x, tuple) else (x,)


class _Checker:
    """One exercise's verdicts: runs the student's function, compares, prints."""

    def __init__(self, name, reference="capslib"):
        self.name, self.reference, self.passed = name, reference, 0

    def run(self, fn, *args, case, explain_error=None, **kwargs):
        """fn(*args, **kwargs); ``explain_error(e)`` may turn an error that a
        known mistake causes into its message (None: the error goes on)."""
        try:
            return fn(*args, **kwargs)
        except NotImplementedError:
            raise  # the stub: the notebook must stop on this very error
        except Exception as e:
            message = explain_error(e) if explain_error is not None else None
            if message is None:
                # The student's own error, kept with its traceback; the note
                # says which input triggered it.
                if hasattr(e, "add_note"):  # Python >= 3.11
                    e.add_note(_("(raised by your {name} on the check's case: {case})",
                                 name=self.name, case=case))
                raise
        self.fail(message)  # outside the except block: no chained traceback

    def ok(self, text):
        self.passed += 1
        print(f"✓ {text}")

    def done(self):
        print(_("All {passed} checks passed.", passed=self.passed))

    def fail(self, message):
        """Stop with the message (which starts with the function's name)."""
        raise CheckFailed(_("your {message}", message=message))

    def array(self, result, case):
        """The result as a numeric NumPy array, or a plain-words failure."""
        if result is None:
            self.fail(_("{name} returned None for {case}: did you forget `return`?",
                        name=self.name, case=case))
        try:
            a = _to_numpy(result)
        except Exception:
            a = None  # failed outside the except block: no chained traceback
        if a is None:
            self.fail(_("{name} returned a {type} for {case}, "
                        "which cannot be read as one array",
                        name=self.name, type=type(result).__name__, case=case))
        if a.dtype.kind not in "biuf":
            self.fail(_("{name} returned {dtype} values for {case}: "
                        "it must return numbers", name=self.name, dtype=a.dtype, case=case))
        return a

    def pair(self, result, case, names):
        """Split a result that must be a tuple of len(names) arrays."""
        if not isinstance(result, (tuple, list)) or len(result) != len(names):
            what = type(result).__name__
            if isinstance(result, (tuple, list)):
                what += _(" of {n_result} items", n_result=len(result))
            self.fail(_("{name} returned a {what} for {case}: it must return "
                        "the pair ({names})",
                        name=self.name, what=what, case=case, names=", ".join(names)))
        return tuple(self.array(r, case) for r in result)

    def compare(self, got, want, case, *, mistakes=(), names=None, shape_rule=None,
                dtype="floating", dtype_rule=None, diagnose=None, hint="",
                rtol=1e-4, atol=1e-5):
        """Pass, or name the mistake: known wrong variants first, then shape,
        finiteness, dtype, ``diagnose(gots)``, and at last the largest error.

        ``got``/``want`` are arrays or tuples of arrays (several outputs);
        ``mistakes`` are ``(message, variant)`` pairs, ``variant()`` giving
        what that mistake would return for this case.
        """
        gots, wants = _as_tuple(got), _as_tuple(want)
        names = names or ("",) * len(wants)
        rules = shape_rule if isinstance(shape_rule, tuple) else (shape_rule,) * len(wants)

        def dtype_ok(g):
            if dtype is None:
                return True
            if isinstance(dtype, str):  # "floating" or "integer": any width
                return g.dtype.kind in ("f" if dtype == "floating" else "iu")
            return g.dtype == np.dtype(dtype)

        if all(_matches(g, w, rtol, atol) and dtype_ok(g) for g, w in zip(gots, wants)):
            return
        for message, variant in mistakes:
            outs = _as_tuple(variant())
            # A variant equal to the right answer here says nothing.
            if all(_matches(o, w, rtol, atol, equal_nan=True) for o, w in zip(outs, wants)):
                continue
            if all(_matches(g, o, rtol, atol, equal_nan=True) for g, o in zip(gots, outs)):
                self.fail(f"{self.name} {message}")
        for g, w, n, rule in zip(gots, wants, names, rules):
            if g.shape != w.shape:
                what = _("{n} of ", n=n) if n else ""
                rule = rule or _("expected {shape}", shape=w.shape)
                self.fail(_("{name} returned {what}shape {shape} for {case}: {rule}",
                            name=self.name, what=what, shape=g.shape, case=case, rule=rule))
        for g, w, n in zip(gots, wants, names):
            if not np.all(np.isfinite(g.astype(np.float64))) and np.all(np.isfinite(w)):
                what = _(" in {n}", n=n) if n else ""
                self.fail(_("{name} returned NaN or inf{what} for {case}.{hint}",
                            name=self.name, what=what, case=case, hint=hint))
        for g, n in zip(gots, names):
            if not dtype_ok(g):
                what = _("{n} with ", n=n) if n else ""
                rule = dtype_rule or {
                    "floating": _("it must return floating-point values"),
                    "integer": _("it must return integers")}.get(dtype, _("expected {dtype}",
                                                                       dtype=dtype))
                self.fail(_("{name} returned {what}dtype {dtype} for {case}: {rule}",
                            name=self.name, what=what, dtype=g.dtype, case=case, rule=rule))
        if diagnose is not None:
            message = diagnose(gots)
            if message:
                self.fail(f"{self.name} {message}")
        for g, w, n in zip(gots, wants, names):
            if not _matches(g, w, rtol, atol):
                err = float(np.max(np.abs(g.astype(np.float64) - w)))
                what = f" ({n})" if n else ""
                self.fail(_("{name} differs from {reference} on {case}{what}: "
                            "largest error {err:.3g}.{hint}", name=self.name,
                            reference=self.reference, case=case, what=what, err=err, hint=hint))


def _gradient(fn, x, who):
    """d sum(fn(x)) / dx as NumPy, with the active backend's autodiff, or a
    CheckFailed naming ``who`` ("your squash") when fn cannot be differentiated.

    fn is traced as the model's training step traces it (a tf.function graph,
    or JAX's tracing): a NumPy call on its input fails there, on every backend,
    rather than silently cutting part of the gradient."""
    backend = keras.backend.backend()
    if backend not in ("tensorflow", "jax"):
        raise RuntimeError(
            f"gradient checks support the tensorflow and jax backends, not {backend}")
    x = np.asarray(x, dtype="float32")
    refused = CheckFailed(_("{who} cannot be differentiated: {advice}",
                            who=who, advice=_USE_KERAS_OPS))
    no_gradient = []
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            def gradient(xt):
                with tf.GradientTape() as tape:
                    tape.watch(xt)
                    y = tf.reduce_sum(tf.convert_to_tensor(fn(xt)))
                g = tape.gradient(y, xt)
                if g is None:  # the result does not depend on x
                    no_gradient.append(True)
                    g = tf.zeros_like(xt)
                return g

            # get_concrete_function: traced once, no "retracing" warning.
            traced = tf.function(gradient, autograph=False).get_concrete_function(
                tf.TensorSpec(x.shape, tf.float32))
            g = traced(tf.constant(x))
        else:
            import jax
            import jax.numpy as jnp
            g = jax.grad(lambda a: jnp.sum(jnp.asarray(fn(a))))(jnp.asarray(x))
    except Exception as e:
        # NumPy on a traced value: TensorFlow's "Cannot convert a symbolic
        # tf.Tensor" (a NotImplementedError, not the stub's), JAX's
        # TracerArrayConversionError.
        numpy = ("Cannot convert a symbolic" in str(e)
                 or type(e).__name__ == "TracerArrayConversionError")
        if isinstance(e, NotImplementedError) and not numpy:
            raise
        first_line = (str(e).splitlines() or [""])[0][:120]
        detail = "" if numpy else f" ({type(e).__name__}: {first_line})"
        raise CheckFailed(f"{refused}{detail}") from None
    if no_gradient:
        raise refused
    return np.asarray(g)


def _check_gradient(c, fn, x, references, what, reference="capslib's"):
    """Fail unless fn (the student's, a function of x alone) can be
    differentiated at x and its gradient matches one of the references'."""
    got = _gradient(fn, x, _("your {name}", name=c.name))
    wants = [_gradient(r, x, f"{reference} {c.name}") for r in references]
    if not any(_matches(got, w, 1e-3, 1e-4) for w in wants):
        err = min(float(np.max(np.abs(got - w))) for w in wants)
        c.fail(_("{name}'s gradient {what} differs from {reference} (largest error "
                 "{err:.3g}) although its values match: something in it blocks part of "
                 "the gradient (ops.stop_gradient, a constant computed outside keras.ops); "
                 "compute every step from the input with keras.ops",
                 name=c.name, what=what, reference=reference, err=err))


def _np_squash(s, axis=-1, epsilon=1e-7, square=True, normalise=True, outside=False,
               by_squared=False):
    """Squash in float64, with switches for the usual mistakes."""
    s = np.asarray(s, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        squared = np.sum(s ** 2, axis=axis, keepdims=True)
        length2 = squared if square else np.sqrt(squared)
        scale = length2 / (1.0 + length2)
        if by_squared:
            scale = scale / (squared + epsilon)
        elif normalise:
            norm = np.sqrt(squared) + epsilon if outside else np.sqrt(squared + epsilon)
            scale = scale / norm
        return scale * s



def _np_softmax(x, axis):
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def _np_norm(x, axis=-1, epsilon=1e-7):
    return np.sqrt(np.sum(np.asarray(x, np.float64) ** 2, axis=axis) + epsilon)



def _wrong_order(names):
    """The message for a pair returned the wrong way round."""
    first, second = names
    return (_("returns ({second}, {first}), the pair in the wrong order: "
              "return ({first}, {second})", second=second, first=first))


