"""Visible checks for the course's exercises.

``check_<name>(fn, seed=0)`` runs a student's ``fn`` on hand-made and random
cases and compares it with capslib (or a reference written here). It prints
one ``✓`` line per case passed and ``All N checks passed.``, or raises
``CheckFailed`` (an ``AssertionError``) naming the mistake in plain words; a
notebook shows that one line, without a traceback. A ``NotImplementedError``
from the student's stub, and any error raised inside the student's function,
propagate unchanged, their traceback cut down to the student's own code.

Printed lines hold no random numbers: notebooks store them and compare them
when re-executed.

One module per notebook (``nb01_data`` ... ``nb08_does_routing_help``), the
machinery they share in ``_core``; every name a notebook or a hidden test uses
is here, as ``checks.check_squash``. The messages a student reads are marked
with ``_core._`` for a translation catalog.
"""
from capslib.checks._core import CheckFailed
from capslib.checks.nb01_data import check_shift_image, check_stratified_split
from capslib.checks.nb02_primary_capsules import check_count_primary_capsules, check_squash
from capslib.checks.nb03_routing import check_prediction_vectors, check_routing
from capslib.checks.nb04_margin_loss import check_capsule_lengths, check_margin_loss
from capslib.checks.nb05_decoder import check_mask_poses, check_reconstruction_loss
from capslib.checks.nb06_training import check_best_epoch, check_two_proportion_z_test
from capslib.checks.nb07_interpretation import (check_centre_of_ink, check_confusion_matrix,
                                               check_tweak_pose)
from capslib.checks.nb08_does_routing_help import check_accuracy_interval, check_coupling_entropy

__all__ = [
    "CheckFailed", "check_best_epoch", "check_capsule_lengths", "check_centre_of_ink",
    "check_confusion_matrix",
    "check_accuracy_interval", "check_coupling_entropy",
    "check_count_primary_capsules", "check_margin_loss", "check_mask_poses",
    "check_prediction_vectors", "check_reconstruction_loss", "check_routing",
    "check_shift_image", "check_squash", "check_stratified_split",
    "check_tweak_pose", "check_two_proportion_z_test",
]
