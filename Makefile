# The two commands of the README: `make run` (the main job) and `make test`.
# Both create .venv on first use (scripts/setup-venv.sh) and reuse it afterwards.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup run test bench lint

setup:
	@bash scripts/setup-venv.sh

run: setup
	$(BIN)/adastudy theory --classes 10575
	$(BIN)/adastudy sweep studies/quick.toml
	$(BIN)/adastudy report runs/quick

test: setup
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python benchmarks/heads.py --markdown
	$(BIN)/python benchmarks/loop.py --head all
	$(BIN)/python benchmarks/fused_loss.py
	$(BIN)/python benchmarks/evaluate.py
	$(BIN)/python benchmarks/sweep.py
	$(BIN)/python benchmarks/ray_overhead.py
	$(BIN)/python benchmarks/sweep_scale.py
	$(BIN)/python benchmarks/data.py

lint: setup
	$(BIN)/ruff check adastudy tests benchmarks
