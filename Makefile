# Two commands do everything on a fresh machine:
#   make serve   set up .venv if missing, build the embedded model, run `vllm serve`
#   make test    set up .venv if missing, run the test suite
VENV      ?= .venv
PY        := $(VENV)/bin/python
STAMP     := $(VENV)/.dllm-setup-done
MODEL_DIR ?= .cache/models/llada-tiny
PORT      ?= 8000
# CPU build of vLLM: GiB of RAM for the KV cache (GPU builds ignore it).
export VLLM_CPU_KVCACHE_SPACE ?= 2
export HF_HUB_OFFLINE ?= 1

.PHONY: setup model serve test clean

$(STAMP): pyproject.toml scripts/setup_env.sh scripts/apply_patches.sh $(wildcard patches/*.patch)
	bash scripts/setup_env.sh
	touch $@

setup: $(STAMP)

$(MODEL_DIR)/config.json: scripts/make_checkpoints.py | $(STAMP)
	$(PY) scripts/make_checkpoints.py llada $(MODEL_DIR) --preset tiny

model: $(MODEL_DIR)/config.json

serve: setup model
	$(VENV)/bin/vllm serve $(MODEL_DIR) --served-model-name llada-tiny \
		--host 127.0.0.1 --port $(PORT) --max-model-len 1024

test: setup
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) .cache *.egg-info
