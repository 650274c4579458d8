# linkcare: `make demo` and `make test` are the whole quick start on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SAMPLE_PEOPLE := 10000
SAMPLE_SEED := 42
SAMPLE_REF := 2026-03-31

.PHONY: demo test lint bench sample-data clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/linkcare validate configs/sample.toml
	$(BIN)/linkcare synth out/demo-site --people 2000 --seed 1 --reference-date $(SAMPLE_REF) --overwrite
	$(BIN)/linkcare validate out/demo-site/site.toml
	@echo
	@echo "The bundled sample site is in sample_data/ (config: configs/sample.toml)."
	@echo "A fresh synthetic site was written to out/demo-site/ (config: out/demo-site/site.toml)."

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

bench: $(VENV)/.installed-dev
	$(BIN)/python bench/bench_synth.py --out bench_out

# Regenerate the committed sample site and its config (only when the generator changes).
sample-data: $(VENV)/.installed
	$(BIN)/linkcare synth sample_data --people $(SAMPLE_PEOPLE) --seed $(SAMPLE_SEED) \
		--reference-date $(SAMPLE_REF) --overwrite
	$(BIN)/python -c "from linkcare.synth import site_config; \
		open('configs/sample.toml', 'w').write(site_config('$(SAMPLE_REF)', '../sample_data/'))"

clean:
	rm -rf out bench_out .pytest_cache .mypy_cache .ruff_cache
