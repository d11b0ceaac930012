# Thin wrapper: every target runs inside $(VENV), created on demand.
VENV ?= .venv
PYTHON ?= python3
EXTRAS ?= notebooks,dev,jax,classroom
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Quick profile keeps tests and notebooks small enough for CI on CPUs.
TEST_ENV := CAPSLIB_PROFILE=quick

.PHONY: install lab teacher test train bench student handout collect formgrader clean

install: $(STAMP)

# Re-run only when the dependency spec changes; the stamp makes it a no-op.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[$(EXTRAS)]"
	touch $@

# Jupyter refuses root unless told (containers, Colab-like machines run as root).
LAB_ARGS ?= $(if $(filter 0,$(shell id -u)),--allow-root)

# The student edition, for learners: JupyterLab serves student/ alone (the notebooks
# without answers or hidden tests) with nbgrader's server and JupyterLab extensions off:
# Jupyter reads jupyter/student/ first (JUPYTER_CONFIG_PATH), as the students' hand-out
# does. The notebooks run in student/ and find the data, the shipped model and results/
# one folder up (capslib.data.course_root).
STUDENT_JUPYTER_CONFIG := $(abspath jupyter/student)
STUDENT_LAB = JUPYTER_CONFIG_PATH="$(STUDENT_JUPYTER_CONFIG)$(if $(JUPYTER_CONFIG_PATH),:$(JUPYTER_CONFIG_PATH))" \
	PATH="$(abspath $(VENV))/bin:$$PATH" \
	"$(abspath $(VENV))/bin/jupyter" lab $(LAB_ARGS) --ServerApp.root_dir="$(abspath student)"
lab: $(STAMP)
	$(STUDENT_LAB)

# The teacher's JupyterLab starts in the course root, $(COURSE)/, serving the whole
# repository: nbgrader's extensions find $(COURSE)/nbgrader_config.py there, so the
# gradebook is $(COURSE)/gradebook.db (never one at the repository root), and this
# environment's bin/ comes first on PATH (the formgrader runs `alembic` from PATH).
COURSE ?= classroom
TEACHER_LAB = cd $(COURSE) && PATH="$(abspath $(VENV))/bin:$$PATH" \
	"$(abspath $(VENV))/bin/jupyter" lab $(LAB_ARGS) --ServerApp.root_dir=..
# The teacher's edition: notebooks/ (solutions, hidden tests) with nbgrader's menus.
teacher: $(STAMP)
	$(TEACHER_LAB) --LabApp.default_url=/lab/tree/notebooks

# nbgrader's formgrader (assignments, submissions, Manage students) on $(COURSE)/.
formgrader: $(STAMP)
	$(TEACHER_LAB) --LabApp.default_url=/formgrader

# Unit tests under TensorFlow (the default), then under JAX without the
# training-heavy ones (XLA trains ~30x slower on CPU), then the notebooks.
# --durations: the CI log names the slowest tests (the CI budget is 25 min on 2 cores).
# pytest-xdist: TEST_WORKERS processes, a whole file (a notebook) to one of them, so
# module fixtures (the graded fixture class) and a notebook's cells stay together.
TEST_WORKERS ?= 2
XDIST = -p xdist -n $(TEST_WORKERS) --dist loadfile
test: $(STAMP)
	$(TEST_ENV) $(PY) -m pytest -q $(XDIST) --durations=20 tests
	$(TEST_ENV) KERAS_BACKEND=jax $(PY) -m pytest -q $(XDIST) -m "not heavy and not backend_free" tests
	if ls notebooks/*.ipynb >/dev/null 2>&1; then \
	  $(TEST_ENV) $(PY) -m pytest -q $(XDIST) --nbval --nbval-current-env \
	    --nbval-sanitize-with notebooks/sanitize.cfg notebooks; \
	fi

# Student copies: nbgrader's generate_assignment over notebooks/ -> student/
# (committed; regenerate after editing a notebook). See TEACHING.md.
student: $(STAMP)
	$(PY) -m capslib.classroom student

# The students' hand-out, without answers: build/handout/capsnet-student/ and its .zip
# (ARGS="--git": also a git repository of it; see capslib/classroom/handout.py).
handout: $(STAMP)
	$(PY) -m capslib.classroom handout $(ARGS)

# Downloaded submissions -> classroom/submitted/ (any LMS's or browser's file names):
# make collect FROM=~/Downloads/submissions [NB=02_primary_capsules] [ROSTER=roster.csv]
NB ?= ALL
collect: $(STAMP)
	$(PY) -m capslib.classroom collect $(NB) --from "$(FROM)" $(if $(ROSTER),--roster "$(ROSTER)")

# The full recipe says first how long it takes on this machine (a short measurement,
# or a resumed run's own epoch times): make train ARGS=--no-estimate skips it.
train: $(STAMP)
	$(PY) -m capslib train $(ARGS)

bench: $(STAMP)
	$(PY) -m capslib bench $(ARGS)

clean:
	rm -rf build *.egg-info .pytest_cache runs
	find . -name __pycache__ -type d -not -path "./$(VENV)/*" -prune -exec rm -rf {} +
