# finetune-course: every task a learner, an instructor or CI needs is a target here.
#   make lab        set up (first time only) and start JupyterLab at chapter 00
#   make test       set up (first time only) and run the whole test suite
# Variables you may override: VENV (reuse one venv across clones), PYTHON, HOST, PORT.

VENV   ?= .venv
PYTHON ?= python3
HOST   ?= 127.0.0.1
PORT   ?= 8888
JOBS   ?= 2
LOCK   := requirements.lock

PY     := $(VENV)/bin/python
# Every tool runs from the venv: the kernel nbclient, nbval and JupyterLab start is the venv's.
# JupyterLab refuses to run as root (containers, CI) unless told so explicitly.
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)
# Strict nbval (never --nbval-lax): every stored output is compared with a fresh run.
NBVAL  := --nbval --nbval-current-env --nbval-sanitize-with nbval_sanitize.cfg --nbval-cell-timeout=120
RUN    := PATH="$(abspath $(VENV))/bin:$$PATH" PYDEVD_DISABLE_FILE_VALIDATION=1

.DEFAULT_GOAL := help
.PHONY: help venv lab test test-e2e test-lib test-notebooks lint notebooks assign fmt lock doctor clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 18

venv:  ## create .venv from the lock (rebuilt when the lock changes, reused otherwise)
	@set -e; \
	want="$$(sha256sum $(LOCK) | cut -d' ' -f1)"; \
	have="$$(cat "$(VENV)/.course-lock-sha256" 2>/dev/null || true)"; \
	if [ "$$want" != "$$have" ]; then \
	  if [ -f "$(VENV)/pyvenv.cfg" ]; then \
	    echo "venv: $(LOCK) changed since $(VENV) was built; rebuilding it"; rm -rf "$(VENV)"; \
	  elif [ -e "$(VENV)" ]; then \
	    echo "venv: $(VENV) exists but is not a virtual environment; move it away or set VENV=..." >&2; exit 1; \
	  fi; \
	  echo "venv: creating $(VENV) from $(LOCK) (first time only: ~2 minutes, ~6 GB)"; \
	  $(PYTHON) -m venv "$(VENV)"; \
	  "$(PY)" -m pip install --quiet --requirement $(LOCK); \
	  "$(PY)" -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (ipykernel)" >/dev/null; \
	  echo "$$want" > "$(VENV)/.course-lock-sha256"; \
	fi; \
	if [ ! -x "$(VENV)/bin/course" ] || ! (cd / && "$(abspath $(PY))" -c 'import pathlib, sys, course_lib; sys.exit(pathlib.Path(course_lib.__file__).resolve().parents[1] != pathlib.Path(sys.argv[1]).resolve())' "$(CURDIR)") 2>/dev/null; then \
	  echo "venv: installing this checkout into $(VENV) (editable)"; \
	  "$(PY)" -m pip install --quiet --no-deps --editable .; \
	fi

# Rooted at the course folder, so exercises/ and solutions/ are reachable too; opens chapter 00.
lab: venv  ## start JupyterLab at chapter 00 (loopback, token auth; HOST=... PORT=... to change)
	$(RUN) jupyter lab --notebook-dir=. --LabApp.default_url=/lab/tree/notebooks/00_start_here.ipynb --ServerApp.ip=$(HOST) --ServerApp.port=$(PORT) --no-browser $(ALLOW_ROOT)

doctor: venv  ## check the environment and say how to fix what is broken
	$(RUN) course doctor

lint: venv  ## ruff: lint and format check, notebooks included
	$(RUN) ruff check .
	$(RUN) ruff format --check .

test-e2e: venv  ## every notebook run in JupyterLab in Chromium; screenshots in test-artifacts/e2e
	$(RUN) pytest -p no:cacheprovider -m e2e tests/e2e

test-lib: venv  ## library and repository tests only (fast)
	$(RUN) pytest -m "not e2e" tests

test-notebooks: venv  ## strict nbval of notebooks/ and solutions/ only
	$(RUN) pytest -p no:cacheprovider $(NBVAL) -n $(JOBS) --dist loadfile notebooks solutions

test: venv  ## the whole suite: lint, library tests, strict nbval, notebooks in JupyterLab in Chromium (e2e)
	@[ -x /usr/bin/chromium ] || echo "make test: no Chromium at /usr/bin/chromium, so the e2e browser tests will be SKIPPED (apt-get install chromium)"
	@start=$$(date +%s); \
	$(MAKE) --no-print-directory lint && \
	$(RUN) pytest -p no:cacheprovider -n $(JOBS) --dist loadfile $(NBVAL) tests notebooks solutions; \
	status=$$?; echo "make test: $$(( $$(date +%s) - start )) s, exit $$status"; exit $$status

notebooks: venv  ## re-execute notebooks/ and solutions/ and store their outputs
	$(RUN) course notebooks refresh notebooks solutions

assign: venv  ## generate exercises/ from solutions/ (course assign)
	$(RUN) course assign

fmt: venv  ## format and auto-fix code and notebooks with ruff
	$(RUN) ruff format .
	$(RUN) ruff check --fix .

lock: venv  ## re-resolve requirements.lock from pyproject.toml (needs the registry), then binder/
	$(RUN) uv pip compile pyproject.toml --extra dev --universal --python-version 3.10 \
	  --constraint lock-constraints.txt --no-header --output-file $(LOCK)
	$(MAKE) --no-print-directory binder/requirements.txt

# Binder builds from the lock with CPU-only torch: the CUDA packages that PyPI's torch wheel
# pulls in (nvidia-*, cuda-*, triton) are left out, each with its "# via" lines.
binder/requirements.txt: $(LOCK)
	{ echo "# Generated from $(LOCK) by 'make lock': Binder (repo2docker) installs this, then runs postBuild."; \
	  echo "# CPU-only torch wheels; the lock's CUDA packages are left out (a Binder has no GPU)."; \
	  echo "--extra-index-url https://download.pytorch.org/whl/cpu"; \
	  awk '/^[a-z]/ { cuda = /^(nvidia-|cuda-|triton==)/ } !cuda' $(LOCK); } > $@

clean:  ## remove caches and build leftovers (keeps the venv)
	rm -rf build *.egg-info .pytest_cache .ruff_cache test-artifacts
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
