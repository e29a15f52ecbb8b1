# The two commands of the README: `make demo` and `make test`. Both set up .venv themselves.
VENV := .venv
BIN := $(VENV)/bin
MODEL ?= examples/digits_cnn.pt2
OUT ?= out/digits_cnn
STEPS ?= 32

.PHONY: setup demo test clean

setup:
	@bash scripts/install.sh

demo: setup
	$(BIN)/snncompile $(MODEL) --target loihi2 -o $(OUT) --steps $(STEPS)

test: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

clean:
	rm -rf out .pytest_cache
