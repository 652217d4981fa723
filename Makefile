# Two commands for a fresh machine; each makes the repo's own venv (.venv, git-ignored) if missing:
#   make demo   -> the offline demo (synthetic VOC, random weights, the report's two methods), figures in figures/
#   make test   -> the test suite
# make demo-all runs the demo with every registered method; make demo-metrics adds every metric of crop mode.
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed
CORES ?= 2

.PHONY: demo demo-all demo-metrics demo-resnet18 demo-groundtruth test test-slurm bench clean

$(STAMP): pyproject.toml requirements.lock
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[test]'
	@touch $(STAMP)

DEMO := $(VENV)/bin/snakemake --cores $(CORES) --max-threads 1 --workflow-profile profiles/default

# --max-threads 1: the demo's small jobs each spend ~6 s starting Python, torch and the model, so
# single-threaded jobs, CORES at a time (device: cpu claims no GPU), finish about twice as fast.
# The report study's figures with its two methods (an overlay: config/demo.yaml itself lists every method)
demo: $(STAMP)
	$(DEMO) --configfile config/demo.yaml config/demo-two-methods.yaml

# every registered method (~80 jobs)
demo-all: $(STAMP)
	$(DEMO) --configfile config/demo.yaml

# the demo plus every metric of the crop mode on two methods (fig8 draws all but core)
demo-metrics: $(STAMP)
	$(VENV)/bin/snakemake --cores $(CORES) --configfile config/demo.yaml config/demo-metrics.yaml --workflow-profile profiles/default

# the report study's sweep on a ResNet-18 (random weights): the stem, every node of one block, every block
demo-resnet18: $(STAMP)
	$(DEMO) --configfile config/demo-resnet18.yaml

# the ground-truth study on the CPU, offline (docs/groundtruth.md): generates the shapes data, trains the model,
# sweeps and scores, then tables/metric-agreement.csv, tables/refinecam-groundtruth.csv and their figures
demo-groundtruth: $(STAMP)
	LAYERSWEEP_STUDIES=1 $(VENV)/bin/snakemake --cores $(CORES) --workflow-profile profiles/default groundtruth

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

test-slurm: $(STAMP)
	bash tests/slurm/run_slurm_test.sh

bench: $(STAMP)
	$(VENV)/bin/python bench/bench_attribution.py
	$(VENV)/bin/python bench/bench_methods_cam.py
	$(VENV)/bin/python bench/bench_metrics.py
	$(VENV)/bin/python bench/bench_head_training.py
	$(VENV)/bin/python bench/bench_precision.py

# Outputs only: downloads in resources/ are kept, the demo's synthetic VOC is not.
clean:
	rm -rf results figures logs benchmarks report.html resources/VOCsynthetic
