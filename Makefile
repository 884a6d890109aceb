# One command each: `make eyes` installs (once) and then trains experiments/eyes.yaml through MLproject's
# generic entry (`mlflow run . -e train -P experiment=eyes`); every experiments/*.yaml has its target.
VENV ?= .venv
EPOCHS ?= 40
EXPERIMENTS := $(sort $(basename $(notdir $(wildcard experiments/*.yaml))))

.PHONY: install test $(EXPERIMENTS)

install: $(VENV)/bin/faceattr

$(VENV)/bin/faceattr: pyproject.toml
	python3 -m venv $(VENV) && $(VENV)/bin/pip install -e ".[test,spark]"
	touch $@

$(EXPERIMENTS): install
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" mlflow run . -e train -P experiment=$@ -P epochs=$(EPOCHS) --env-manager local --experiment-name $@

test: install
	$(VENV)/bin/python -m pytest
