# `make demo` and `make test` set everything up from a fresh clone (Python 3.11 on PATH).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --disable-pip-version-check
# CPU default. On a CUDA machine: make setup TORCH="torch==2.13.0 torchvision==0.28.0" TORCH_INDEX=<cuda wheel index>
TORCH ?= torch==2.13.0
TORCHVISION ?= torchvision==0.28.0
TORCH_INDEX ?=
STAMP := $(VENV)/.installed
DEMO_OUT ?= output/demo
DATA ?= datasets

export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: setup demo test bench compare compare-quick compare-curve footage gpu-check gpu-wheels clean-venv mutants

setup: $(STAMP)

$(STAMP): requirements.txt setup.cfg
	$(PYTHON) -m venv $(VENV)
	$(PIP) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX),) $(TORCH)
	# torchvision/fastreid metadata pin other torch builds: install them without dependencies
	$(PIP) --no-deps $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX),) $(TORCHVISION)
	$(PIP) --no-deps fastreid==1.4.0
	$(PIP) -r requirements.txt
	$(PIP) --no-deps -e .
	$(PY) tools/compat.py --build-cython
	touch $@

demo: setup
	$(PY) -m datasets_ext.synthetic.generate --root $(DATA) --preset default
	$(PY) train_net.py --config-file configs/Synthetic/baseline.yml OUTPUT_DIR $(DEMO_OUT)

test: setup
	$(PY) -m pytest -q -x --durations=15

# Mutation check of the tests that pin the papers (tools/mutants.py; slow, not part of `make test`).
# MUTANTS="PTL sign-" runs the mutants whose id or project contains one of the words.
MUTANTS ?=
mutants: setup
	$(PY) tools/mutants.py $(if $(MUTANTS),--only $(MUTANTS),)

bench: setup
	$(PY) -m tools.bench

# each paper's ablation + every method beside the baseline (~2 h on 2 quiet cores for 3 seeds,
# ~3.3 h for 5; resumable: more seeds later on the same --out add runs)
COMPARE_SEEDS ?= 0 1 2
compare: setup
	$(PY) -m tools.compare --root $(DATA)/compare --out output/compare --seeds $(COMPARE_SEEDS)

# the methods table only (~1 h on 2 cores)
compare-quick: setup
	$(PY) -m tools.compare --quick --root $(DATA)/compare --out output/compare-quick

# the baseline's learning curve (picks the budget: --epochs of compare)
compare-curve: setup
	$(PY) -m tools.compare --curve --root $(DATA)/compare --out output/compare-curve

# On the GPU machine (Python 3.12 + torch there; wheels carried in .whl/, see README "GPU check")
gpu-check:
	bash tools/gpu_check.sh

gpu-wheels:
	bash tools/gpu_wheels.sh

# Real footage (datasets_ext/footage.py): OpenCV's vtest.avi (from FOOTAGE_VIDEO, else unpacked from
# Debian's opencv-doc package), HOG tracks -> $(DATA)/footage, then the demo model evaluated on it.
FOOTAGE_VIDEO ?=
FOOTAGE_OUT ?= output/footage
DEMO_CFG := configs/Synthetic/baseline.yml

$(DEMO_OUT)/model_final.pth:
	$(MAKE) demo

footage: setup $(DEMO_OUT)/model_final.pth
	$(PY) -m datasets_ext.footage --root $(DATA) $(if $(FOOTAGE_VIDEO),--video $(FOOTAGE_VIDEO),)
	$(PY) -m datasets_ext.check --root $(DATA) --dataset DG_Footage
	$(PY) -m datasets_ext.footage --root $(DATA) --references
	$(PY) train_net.py --config-file $(DEMO_CFG) --eval-only MODEL.WEIGHTS $(DEMO_OUT)/model_final.pth \
		DATASETS.ROOT $(DATA) DATASETS.TESTS '("DG_Footage",)' OUTPUT_DIR $(FOOTAGE_OUT)
	$(PY) -m plugins.evaluation.rank_list --config-file $(DEMO_CFG) --weights $(DEMO_OUT)/model_final.pth \
		--dataset DG_Footage --num-queries 10 --out $(FOOTAGE_OUT)/rank_lists DATASETS.ROOT $(DATA)
	$(PY) -m plugins.run paoa.real_crops --root $(DATA) --out $(FOOTAGE_OUT)/weak_labels

clean-venv:
	rm -rf $(VENV)
