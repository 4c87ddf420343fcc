# The README's two commands are `make demo` and `make test`; everything else is what they are made of.
SHELL := /bin/bash
WITH_ENV := scripts/with_env.sh

.PHONY: setup test lint format demo clean

setup:
	@bash scripts/setup.sh

lint: setup
	@$(WITH_ENV) ruff check .
	@$(WITH_ENV) ruff format --check .

format: setup
	@$(WITH_ENV) ruff format .
	@$(WITH_ENV) ruff check --fix .

test: lint
	@$(WITH_ENV) python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf build install log .pytest_cache .ruff_cache
