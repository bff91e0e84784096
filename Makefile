# The two commands of the README:
#   make train   # set up .venv, then train the hybrid on the generated synthetic dataset
#   make test    # set up .venv, then run the test suite
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: train test install

$(STAMP): setup.py requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -c requirements.lock -e ".[tfrs,serving,dev,beam]"
	touch $(STAMP)

install: $(STAMP)

# The settings of flags/synthetic_hybrid.flags; ARGS override them.
train: $(STAMP)
	$(VENV)/bin/python -m hybrid_tfrs.cli.train --config=synthetic_hybrid $(ARGS)

test: $(STAMP)
	$(VENV)/bin/python -m pytest tests $(PYTEST_ARGS)
