"""Training recipes and the one setting that shrinks them: ``CAPSLIB_PROFILE``.

- ``full``: the course's full recipe, the paper's settings plus a flip and 50
  epochs (default for ``python -m capslib train``).
- ``lesson``: the full data for 3 epochs, about an hour on 2 CPU cores (notebook 06's
  stored run: 19 min per epoch; homework: the training notebook run with
  ``CAPSLIB_PROFILE=lesson``).
- ``class``: 2 epochs on 10,000 training images, under 10 minutes on 2 CPU
  cores (the default of the training notebooks, for class time).
- ``quick``: a small subset for a few seconds of work (CI, notebooks under test).
"""
import dataclasses
import math
import numbers
import os
import sys

PROFILE_ENV = "CAPSLIB_PROFILE"
PROFILES = ("full", "lesson", "class", "quick")
# Fashion-MNIST's training file: the validation split is taken from it.
N_TRAIN_FILE_IMAGES = 60_000
N_CLASSES = 10


class ConfigError(ValueError):
    """A setting out of its range, or a recipe that does not fit the run folder.

    A user's mistake: the command line prints the message alone and exits with 2.
    """


MODELS = ("capsnet", "baseline")


@dataclasses.dataclass
class TrainConfig:
    model: str = "capsnet"  # or "baseline": the paper's baseline CNN (capslib.baseline)
    decoder: bool = True  # CapsNet only: the reconstruction decoder and its loss
    epochs: int = 50
    batch_size: int = 100
    learning_rate: float = 1e-3
    lr_decay: float = 0.95  # per epoch
    routing_iterations: int = 3
    augment: bool = True  # random shift up to max_shift px + horizontal flip
    max_shift: int = 2
    flip: bool = True
    val_size: int = 5000
    seed: int = 42
    train_limit: int | None = None  # use only the first N training images
    test_limit: int | None = None  # evaluate on the first N test images
    reconstruction_weight: float = 0.0005
    mixed_precision: bool = False
    distribute: bool = False
    time_budget_s: float | None = None  # this session stops before an epoch would end later
    time_budget_action: str = "pause"  # at the budget: "pause" (go on next time) or "finish"
    patience: int | None = None  # early stop: this many epochs without a lower val_loss
    profile: str = "full"

    def replace(self, **changes):
        """A copy with ``changes``; ``None`` values are ignored (CLI flags not given)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self):
        return dataclasses.asdict(self)

    def validate(self):
        """Raise a ConfigError naming the first setting out of range; return self."""
        self._check_each_setting()
        n_train = N_TRAIN_FILE_IMAGES - self.val_size
        if self.train_limit:
            n_train = min(n_train, self.train_limit)
        if self.batch_size > n_train:
            raise ConfigError(
                f"{setting_name('batch_size')} {self.batch_size!r}: must be at most the "
                f"{n_train:,} training images")
        return self

    def _check_each_setting(self):
        for name, check in _CHECKS.items():
            value = getattr(self, name)
            problem = check(value)
            if problem:
                raise ConfigError(f"{setting_name(name)} {value!r}: {problem}")


# The command line's flag for each setting (the others are named as in TrainConfig).
FLAGS = {
    "model": "--model", "decoder": "--decoder", "epochs": "--epochs", "batch_size": "--batch-size", "learning_rate": "--learning-rate",
    "lr_decay": "--lr-decay", "routing_iterations": "--routing-iterations",
    "augment": "--augment", "val_size": "--val-size", "seed": "--seed",
    "train_limit": "--train-limit", "test_limit": "--test-limit",
    "mixed_precision": "--mixed-precision", "distribute": "--distribute",
    "time_budget_s": "--time-budget", "time_budget_action": "--time-budget-action",
    "patience": "--patience", "profile": "--profile",
}
TIME_BUDGET_ACTIONS = ("pause", "finish")


def setting_name(name):
    """How a message names a setting: its flag where it has one."""
    return FLAGS.get(name, name)


def _integer(low, high=None, optional=False, leave_out="for all images"):
    def check(value):
        if optional and value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            return f"must be a whole number, got {type(value).__name__}"
        if value < low or (high is not None and value > high):
            allowed = f"from {low:,} to {high:,}" if high is not None else f">= {low:,}"
            none = f" (leave it out {leave_out})" if optional else ""
            return f"must be {allowed}{none}"
        return None
    return check


def _number(low, high, low_open=True, optional=False):
    def check(value):
        if optional and value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return f"must be a number, got {type(value).__name__}"
        too_low = value <= low if low_open else value < low
        if not math.isfinite(value) or too_low or value > high:
            allowed = f"> {low}" if low_open else f">= {low}"
            return f"must be {allowed}" + (f" and <= {high}" if math.isfinite(high) else "")
        return None
    return check


def _boolean(value):
    return None if isinstance(value, bool) else f"must be True or False, got {type(value).__name__}"


_CHECKS = {
    "model": lambda value: None if value in MODELS else f"must be one of {', '.join(MODELS)}",
    "decoder": _boolean,
    "epochs": _integer(1),
    "batch_size": _integer(1),
    "learning_rate": _number(0, 1),
    "lr_decay": _number(0, 1),
    "routing_iterations": _integer(1),
    "augment": _boolean,
    "max_shift": _integer(0, 27),  # a shift of 28 px or more leaves a blank image
    "flip": _boolean,
    # The stratified split needs an image of each class on both sides.
    "val_size": _integer(N_CLASSES, N_TRAIN_FILE_IMAGES - N_CLASSES),
    "seed": _integer(0, 2**32 - 1),
    "train_limit": _integer(1, optional=True),
    "test_limit": _integer(1, optional=True),
    "reconstruction_weight": _number(0, 1, low_open=False),
    "mixed_precision": _boolean,
    "distribute": _boolean,
    "time_budget_s": _number(0, math.inf, optional=True),
    "time_budget_action": lambda value: None if value in TIME_BUDGET_ACTIONS else (
        f"must be one of {', '.join(TIME_BUDGET_ACTIONS)}"),
    "patience": _integer(1, optional=True, leave_out="for no early stop"),
    "profile": lambda value: None if value in PROFILES else f"must be one of {', '.join(PROFILES)}",
}


_PROFILE_SETTINGS = {
    "full": {},
    "lesson": dict(epochs=3),
    "class": dict(epochs=2, train_limit=10_000),
    "quick": dict(epochs=2, batch_size=32, train_limit=1200, val_size=200,
                  test_limit=500),
}


def get_profile(default="full"):
    """The profile named by ``$CAPSLIB_PROFILE``, else ``default``."""
    profile = os.environ.get(PROFILE_ENV, "").strip().lower() or default
    if profile not in PROFILES:
        raise ConfigError(f"{PROFILE_ENV}={profile!r} is not one of {', '.join(PROFILES)}")
    return profile


def config_for_profile(profile=None, default="full", **overrides):
    """The TrainConfig of ``profile`` (or of ``$CAPSLIB_PROFILE``), then ``overrides``.

    Under the quick profile its settings are upper bounds that ``overrides``
    cannot exceed, so notebooks and CI stay fast without being edited; a line
    on stderr says which explicit values were lowered. Raises ``ConfigError``
    for a setting out of range (checked before the caps apply).
    """
    profile = profile or get_profile(default)
    if profile not in PROFILES:
        raise ConfigError(f"profile {profile!r} is not one of {', '.join(PROFILES)}")
    config = TrainConfig(profile=profile, **_PROFILE_SETTINGS[profile])
    config = config.replace(**overrides)
    config._check_each_setting()  # before the caps, which would hide a 0 or a -1
    if profile == "quick":
        caps = {key: min(cap, getattr(config, key) or cap)
                for key, cap in _PROFILE_SETTINGS["quick"].items()}
        lowered = [f"{setting_name(key)} {overrides[key]} -> {cap}" for key, cap in caps.items()
                   if overrides.get(key) is not None and overrides[key] > cap]
        if lowered:
            print(f"The quick profile lowered {', '.join(lowered)} (its upper bounds keep "
                  "CI fast; choose another profile to use your values).", file=sys.stderr)
        config = config.replace(**caps)
    return config.validate()
