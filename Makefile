# Two commands do everything on a fresh clone:
#   make demo   install, train on the built-in corpus, evaluate, predict a few reviews
#   make test   install, then lint, type-check and run the test suite
PYTHON ?= python3
TORCH_VERSION := 2.13.0
# Where torch comes from when this machine does not already hold the wheel (pip's find-links):
# PyTorch's CPU index unless an NVIDIA GPU is present, so a laptop gets the ~200 MB CPU build, not
# PyPI's CUDA build and its GBs of CUDA libraries. TORCH_INDEX= (empty) takes PyPI's default
# build; TORCH_INDEX=https://download.pytorch.org/whl/cu128 a given CUDA build.
TORCH_INDEX ?= $(if $(shell command -v nvidia-smi 2>/dev/null),,https://download.pytorch.org/whl/cpu)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-slow test-scale lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned: a wheel already on this machine if there is one (offline), else
	# from TORCH_INDEX; then its dependencies
	$(BIN)/pip install --quiet --no-deps --no-index torch==$(TORCH_VERSION) 2>/dev/null || \
		$(BIN)/pip install --quiet torch==$(TORCH_VERSION) \
		$(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))
	$(BIN)/pip install --quiet torch==$(TORCH_VERSION)
	$(BIN)/pip install --quiet -e '.[test,onnx,serve]'
	# compile the batch scorer's fused steps for this CPU now (cached; skipped without a compiler)
	$(BIN)/python -m rnn_sentiment.inference.native
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/rnn-sentiment train configs/default.yaml
	$(BIN)/rnn-sentiment evaluate latest
	$(BIN)/rnn-sentiment predict --model latest "This movie is not good" "This movie is not bad" \
		"The acting was wonderful but the plot was a total mess" \
		"The plot was a mess but the acting was wonderful" "The story was absolutely brilliant"
	@echo "next: 'source $(VENV)/bin/activate', then 'rnn-sentiment --help' (or run $(BIN)/rnn-sentiment)"

lint: $(STAMP)
	$(BIN)/ruff check rnn_sentiment tests scripts
	$(BIN)/ruff format --check rnn_sentiment tests scripts
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -m "not slow and not ray and not spark" -q

# Ray and Spark on local clusters (about 1.5 min; pyspark needs Java 17+). Installs the ray and
# spark extras (about 240 MB and 490 MB) the first time.
test-scale: $(STAMP)
	$(BIN)/pip install --quiet -e '.[test,onnx,serve,ray,spark]'
	$(BIN)/python -m pytest -m "ray or spark" -q

# Real-data checks; they skip themselves when ../shared/data is absent.
test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow -q

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
