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
                                    ClearHiddenTests, ClearMarkScheme, ClearOutput,
                                    ClearSolutions, ComputeChecksums, DeduplicateIds,
                                    GetGrades, IgnorePattern, IncludeHeaderFooter,
                                    InstantiateTests, LimitOutput, LockCells,
                                    OverwriteKernelspec, SaveAutoGrades, SaveCells)

c = get_config()  # noqa: F821  (provided by nbgrader when it loads this file)

c.CourseDirectory.course_id = "capsnet-course"
c.CourseDirectory.root = str(Path(__file__).resolve().parent)
# One assignment per notebook, named after it: 02_primary_capsules, ...
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "conftest.py",
                            "sanitize.cfg"]

# The stub students see in place of a solution region.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# No student code runs in nbgrader's process: `capsnet-classroom grade` first runs each
# notebook in its own sandbox (capslib/classroom/sandbox.py: bubblewrap, no network,
# limits) and decides each graded cell outside it (capslib/classroom/judge.py); nbgrader's
# Execute step is replaced by ApplySandboxRun, which takes those outputs and verdicts.
# Time limits (60 s a cell, 15 min for the course's long cells, 5 s after a runaway one)
# are the grader's (`grade --timeout`, CAPSLIB_GRADE_TIMEOUT).
c.Autograde.autograde_preprocessors = [course_hooks.ApplySandboxRun, IgnorePattern,
                                       ClearMetadataPreprocessor, LimitOutput, SaveAutoGrades,
                                       AssignLatePenalties, CheckCellMetadata]
c.ApplySandboxRun.runs_dir = str(Path(__file__).resolve().parent / "sandboxed")

# Student copies: nbval's markers (`# NBVAL_IGNORE_OUTPUT` and the `# Reason:` under it)
# are the tests' plumbing, left out before the checksums are computed. CourseLinks adds the
# Colab, Kaggle and Binder badges and points the install line and links above the notebooks'
# folder at the course's repository (capslib/course.py, or $CAPSNET_COURSE_URL).
c.GenerateAssignment.preprocessors = [
    course_hooks.RemoveTestPlumbing, course_hooks.CourseLinks, IncludeHeaderFooter, InstantiateTests, LockCells,
    ClearSolutions, ClearOutput, CheckCellMetadata, ComputeChecksums, SaveCells,
    ClearHiddenTests, ClearMarkScheme, ComputeChecksums, CheckCellMetadata]

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
