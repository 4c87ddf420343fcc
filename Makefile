# The README's two commands are `make demo` and `make test`; the other targets are what they are made of.
SHELL := /bin/bash
WITH_ENV := scripts/with_env.sh
# The Realman stand-in interfaces used by the tests only (never installed for users).
TEST_OVERLAY := build/test_fixtures/install/local_setup.bash

.PHONY: setup test-fixtures lint format test demo clean

setup:
	@bash scripts/setup.sh

test-fixtures: setup
	@bash scripts/build_test_fixtures.sh

lint: setup
	@$(WITH_ENV) ruff check .
	@$(WITH_ENV) ruff format --check .

format: setup
	@$(WITH_ENV) ruff format .
	@$(WITH_ENV) ruff check --fix .

test: lint test-fixtures
	@$(WITH_ENV) bash -c 'source $(TEST_OVERLAY) && python -m pytest $(PYTEST_ARGS)'

# The whole loop on the simulated arm with the shipped default model: sim camera -> policy -> bridge -> sim arm.
# videovla-demo exits 1 when the robot did not succeed (reported, not an error of the demo), 2 when it could not run.
demo: setup
	@$(WITH_ENV) videovla-demo --instruction "pick up the red cube" --output outputs/demo; [ $$? -le 1 ]

clean:
	rm -rf build install log .pytest_cache .ruff_cache
