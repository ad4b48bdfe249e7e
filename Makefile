# Two commands do everything on a fresh clone:
#   make demo   install, train on the built-in corpus, evaluate, predict a few reviews
#   make test   install, then lint, type-check and run the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-slow lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned: the 2.13.0 CPU wheel, not a multi-gigabyte CUDA build
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	# compile the batch scorer's fused steps for this CPU now (cached; skipped without a compiler)
	$(BIN)/python -m rnn_sentiment.inference.native
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/rnn-sentiment train configs/default.yaml
	$(BIN)/rnn-sentiment evaluate
	$(BIN)/rnn-sentiment predict "This movie is not good" "This movie is not bad" \
		"The acting was wonderful but the plot was a total mess" \
		"The plot was a mess but the acting was wonderful" "The story was absolutely brilliant"

lint: $(STAMP)
	$(BIN)/ruff check rnn_sentiment tests scripts
	$(BIN)/ruff format --check rnn_sentiment tests scripts
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -m "not slow" -q

# Real-data checks; they skip themselves when ../shared/data is absent.
test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow -q

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
