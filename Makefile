# kombain: `make serve` sets up .venv and starts the server; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# `make serve HOST=0.0.0.0 PORT=8080`; without them the server reads KOMBAIN_HOST / KOMBAIN_PORT
# (default 127.0.0.1:8000). HOST and PORT are taken from the command line only: shells and CI
# often export HOST as the machine's name, which is no address to listen on.
SERVE_ARGS := $(if $(filter command line,$(origin HOST)),--host $(HOST)) \
              $(if $(filter command line,$(origin PORT)),--port $(PORT))
STAMP  := $(VENV)/.installed

.PHONY: serve test setup lint loadtest clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip wheel

$(STAMP): $(PY) pyproject.toml
	# torch first, pinned: the CPU build on local disk (a bare `torch` would pull the CUDA build).
	$(PY) -m pip install -q 'torch==2.13.0'
	$(PY) -m pip install -q -e '.[models,test,loadtest,lane]'
	# silero-vad declares torch; we only use its bundled ONNX file, so skip its dependencies.
	$(PY) -m pip install -q --no-deps 'silero-vad==6.2.3'
	# Smart Turn v3.2 (end-of-turn model for semantic_vad) ships inside this wheel; the server uses
	# only its ONNX file. The test extra already installs it with its dependencies (the pipecat
	# tests); this keeps the file there for an install without that extra. Keep the versions equal.
	$(PY) -m pip install -q --no-deps 'pipecat-ai==1.14.0'
	# Resemblyzer's speaker encoder (diarization) ships in its wheel; kombain reads only its weights
	# (once, with the lane's torch) and runs the model in numpy, so librosa/webrtcvad are skipped.
	$(PY) -m pip install -q --no-deps 'resemblyzer==0.1.4'
	touch $(STAMP)

setup: $(STAMP)

serve: setup
	$(VENV)/bin/kombain serve $(SERVE_ARGS)

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: setup
	$(PY) -m pip install -q ruff mypy
	$(VENV)/bin/ruff check server streaming clients loadtest tests
	@# kombain.* is mapped onto the top-level folders (pyproject's package-dir), which mypy cannot
	@# follow through the editable install; it reads them through a tree of links instead.
	rm -rf build/mypy && mkdir -p build/mypy/kombain
	for p in server streaming clients loadtest; do ln -s ../../../$$p build/mypy/kombain/$$p; done
	MYPYPATH=build/mypy $(VENV)/bin/mypy

loadtest: setup
	$(PY) -m kombain.loadtest stt --sessions 1 --audio tests/data/speech

clean:
	rm -rf $(VENV) *.egg-info
