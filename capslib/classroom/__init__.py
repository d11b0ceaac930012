"""The classroom: the teacher's tools around nbgrader (``capsnet-classroom``).

- ``cli``: the command line (student copies, execute, solve, time, grade, feedback, export,
  hand-out, collect);
- ``collect``: submissions as LMSs and browsers name them -> nbgrader's ``submitted/``;
- ``grading``: autograding (each notebook run in a sandbox, the grade decided outside it),
  the report, feedback pages, ``grades.csv``;
- ``sandbox``: the throwaway sandbox a student's kernel runs in;
- ``handout``: the students' hand-out without answers;
- ``hooks``: nbgrader preprocessors the course's ``nbgrader_config.py`` names;
- ``paths``: where the course folder is.

Nothing here is imported by ``import capslib``: a student's installation needs no nbgrader.
"""
