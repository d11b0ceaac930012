"""nbgrader settings of the course; every nbgrader command (and the formgrader)
runs with this folder as the course root.

``make student`` stages ``source/<notebook>/`` from ``../notebooks`` and writes
the student copies to ``../student``; ``submitted/``, ``autograded/``,
``feedback/`` and ``gradebook.db`` appear here as you collect and grade (git
ignores them). See ../TEACHING.md.
"""
from pathlib import Path

from capslib.classroom import hooks as course_hooks
from nbconvert.preprocessors import ClearMetadataPreprocessor, CSSHTMLHeaderPreprocessor  # noqa: E402
from nbgrader.preprocessors import (AssignLatePenalties, CheckCellMetadata,  # noqa: E402
                                    ClearOutput, DeduplicateIds,
                                    GetGrades, IgnorePattern, LimitOutput, OverwriteKernelspec,
                                    SaveAutoGrades)

c = get_config()  # noqa: F821  (provided by nbgrader when it loads this file)

c.CourseDirectory.course_id = "capsnet-course"
c.CourseDirectory.root = str(Path(__file__).resolve().parent)
# One assignment per notebook, named after it: 02_primary_capsules, ...
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "conftest.py",
                            "sanitize.cfg"]

# The stub students see in place of a solution region.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# A runaway cell (``while True: pass``) is interrupted after 60 s (the
# environment variable CAPSLIB_GRADE_TIMEOUT changes it) and the notebook goes
# on, its later cells with 5 s each; only the course's own long cells (tagged
# "long-running" in ../notebooks, with their source unchanged) get 15 minutes.
c.Autograde.autograde_preprocessors = [course_hooks.RunawayAwareExecute, IgnorePattern,
                                       ClearMetadataPreprocessor, LimitOutput, SaveAutoGrades,
                                       AssignLatePenalties, CheckCellMetadata]
c.Execute.interrupt_on_timeout = True

# Locked cells get their original source back (hidden tests included), a
# deleted check cell comes back, and "checksum has changed" is logged only for
# a cell the student really changed.
c.Autograde.sanitize_preprocessors = [ClearOutput, DeduplicateIds, OverwriteKernelspec,
                                      course_hooks.OverwriteLockedCells, CheckCellMetadata]
c.OverwriteLockedCells.add_missing_cells = True

# Feedback pages show each check's message, never a hidden test or its source.
c.GenerateFeedback.preprocessors = [GetGrades, course_hooks.HideHiddenTests,
                                    CSSHTMLHeaderPreprocessor]

# `capsnet-classroom collect <notebook> --from DIR` (capslib/classroom/collect.py)
# reads the names LMSs and browsers give files and copies them to submitted/
# itself. Plain `nbgrader zip_collect <notebook>` still works for files put in
# downloaded/<notebook>/archive/ named <student id>_<notebook>.ipynb:
c.FileNameCollectorPlugin.named_regexp = r".*/(?P<student_id>[A-Za-z0-9.-]+)_(?P<file_id>\d\d_\w+)\.ipynb$"
