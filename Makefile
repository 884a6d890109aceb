# One command each: `make eyes` installs (once) and then runs exactly the README's mlflow run line.
VENV ?= .venv
EPOCHS ?= 40
EXPERIMENTS := eyes mouth background gender

.PHONY: install test $(EXPERIMENTS)

install: $(VENV)/bin/faceattr

$(VENV)/bin/faceattr: pyproject.toml
	python3 -m venv $(VENV) && $(VENV)/bin/pip install -e ".[test,spark]"
	touch $@

$(EXPERIMENTS): install
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" mlflow run . -e $@ -P epochs=$(EPOCHS) --env-manager local --experiment-name $@

test: install
	$(VENV)/bin/python -m pytest
