"""nbgrader settings of the course; run every nbgrader command from this folder.

This folder is the course root: `make student` stages ``source/<notebook>/``
from ``../notebooks`` and writes the student copies to ``../student``;
``submitted/``, ``autograded/``, ``feedback/`` and ``gradebook.db`` appear
here as you collect and grade (git ignores them). See ../TEACHING.md.
"""
c = get_config()  # noqa: F821  (provided by nbgrader when it loads this file)

c.CourseDirectory.course_id = "capsnet-course"
# One assignment per notebook, named after it: 02_primary_capsules, ...
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "conftest.py",
                            "sanitize.cfg"]

# The stub students see in place of a solution region.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# Autograding runs whole notebooks; 06 trains a model (quick profile: about a
# minute on 2 cores), so allow long cells. Students' errors do not stop it.
c.Execute.timeout = 900
c.Execute.allow_errors = True

# `nbgrader zip_collect <notebook>` collects the files (loose or zipped) put in
# downloaded/<notebook>/archive/, named <student id>_<notebook>.ipynb, for example
# alice_02_primary_capsules.ipynb. Adapt the pattern to your LMS's file names.
c.FileNameCollectorPlugin.named_regexp = r".*/(?P<student_id>[A-Za-z0-9.-]+)_(?P<file_id>\d\d_\w+)\.ipynb$"
