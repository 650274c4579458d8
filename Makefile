# linkcare: `make demo` and `make test` are the whole quick start on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SAMPLE_PEOPLE := 10000
SAMPLE_SEED := 42
SAMPLE_REF := 2026-03-31

.PHONY: demo test lint layers bench sample-data clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# LightGBM (the gradient-boosted risk model) needs the OpenMP runtime, libgomp1 on Debian; most
# machines with gcc have it already, and only a machine without it installs it here.
$(VENV)/.system: | $(BIN)/python
	@if ! { ldconfig -p 2>/dev/null || /sbin/ldconfig -p 2>/dev/null; } | grep -q 'libgomp\.so\.1'; then \
		SUDO=""; if [ "$$(id -u)" -ne 0 ]; then SUDO="sudo"; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends libgomp1; \
	fi
	touch $@

# Reinstall whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python $(VENV)/.system
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python $(VENV)/.system
	$(BIN)/python -m pip install --quiet -e '.[dev,spark]'
	touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/linkcare validate configs/sample.toml
	$(BIN)/linkcare -q link configs/sample.toml --out out/sample-cohort
	$(BIN)/linkcare evaluate links out/sample-cohort --truth sample_data/truth/records.parquet
	$(BIN)/linkcare -q train configs/sample.toml --cohort out/sample-cohort --out out/sample-model
	$(BIN)/linkcare -q stratify configs/sample.toml --cohort out/sample-cohort --model out/sample-model \
		--out out/sample-risk
	$(BIN)/linkcare -q monitor configs/sample.toml --cohort out/sample-cohort \
		--out out/sample-monitor
	@echo
	@echo "The cohort dataset of the bundled sample site is in out/sample-cohort/"
	@echo "(person_index, persons, events and pairs as Parquet, model.json, manifest.json, rejects/);"
	@echo "open out/sample-cohort/link_report.html in a browser to see how well it linked."
	@echo "The risk models, their model card and risk_report.html are in out/sample-model/;"
	@echo "risk scores are in out/sample-risk/risk.parquet, the worklists in out/sample-risk/worklists/"
	@echo "and the risk report in out/sample-risk/risk_report.html."
	@echo "What each cohort uses and costs, month by month, is in out/sample-monitor/monitor.parquet"
	@echo "(and monitor.csv); open out/sample-monitor/monitor_report.html for the SPC charts against plan."

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

lint: layers
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

# The layers of src/linkcare and no import cycles (import-linter contracts in pyproject.toml).
layers: $(VENV)/.installed-dev
	$(BIN)/lint-imports

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python $(VENV)/.system
	$(BIN)/python -m pip install --quiet -e '.[dev,bench,spark]'
	touch $@ $(VENV)/.installed-dev $(VENV)/.installed

bench: $(VENV)/.installed-bench
	$(BIN)/python bench/bench_synth.py --out bench_out
	$(BIN)/python bench/bench_months.py --out bench_out
	$(BIN)/python bench/bench_link.py --out bench_out
	$(BIN)/python bench/bench_spark.py --out bench_out
	$(BIN)/python bench/bench_risk.py --out bench_out
	$(BIN)/python bench/bench_monitor.py --out bench_out
	$(BIN)/python bench/bench_impact.py --out bench_out
	$(BIN)/python bench/bench_efi.py --out bench_out

# Regenerate the committed sample site and its config (only when the generator changes).
sample-data: $(VENV)/.installed
	$(BIN)/linkcare synth sample_data --people $(SAMPLE_PEOPLE) --seed $(SAMPLE_SEED) \
		--reference-date $(SAMPLE_REF) --overwrite
	$(BIN)/python -c "from linkcare.synth import site_config; \
		open('configs/sample.toml', 'w').write(site_config('$(SAMPLE_REF)', '../sample_data/'))"

clean:
	rm -rf out bench_out .pytest_cache .mypy_cache .ruff_cache
