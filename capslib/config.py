"""Training recipes and the one setting that shrinks them: ``CAPSLIB_PROFILE``.

- ``full``: the course's full recipe, the paper's settings plus a flip and 50
  epochs (default for ``python -m capslib train``).
- ``lesson``: the full data for 3 epochs, 30 to 60 minutes on 2 CPU cores
  (homework: the training notebook run with ``CAPSLIB_PROFILE=lesson``).
- ``class``: 2 epochs on 10,000 training images, under 10 minutes on 2 CPU
  cores (the default of the training notebooks, for class time).
- ``quick``: a small subset for a few seconds of work (CI, notebooks under test).
"""
import dataclasses
import os

PROFILE_ENV = "CAPSLIB_PROFILE"
PROFILES = ("full", "lesson", "class", "quick")


@dataclasses.dataclass
class TrainConfig:
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
    time_budget_s: float | None = None  # stop before an epoch would end later
    profile: str = "full"

    def replace(self, **changes):
        """A copy with ``changes``; ``None`` values are ignored (CLI flags not given)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self):
        return dataclasses.asdict(self)


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
        raise ValueError(f"{PROFILE_ENV}={profile!r} is not one of {', '.join(PROFILES)}")
    return profile


def config_for_profile(profile=None, default="full", **overrides):
    """The TrainConfig of ``profile`` (or of ``$CAPSLIB_PROFILE``), then ``overrides``.

    Under the quick profile its settings are upper bounds that ``overrides``
    cannot exceed, so notebooks and CI stay fast without being edited.
    """
    profile = profile or get_profile(default)
    if profile not in PROFILES:
        raise ValueError(f"profile {profile!r} is not one of {', '.join(PROFILES)}")
    config = TrainConfig(profile=profile, **_PROFILE_SETTINGS[profile])
    config = config.replace(**overrides)
    if profile == "quick":
        caps = {key: min(cap, getattr(config, key) or cap)
                for key, cap in _PROFILE_SETTINGS["quick"].items()}
        config = config.replace(**caps)
    return config
