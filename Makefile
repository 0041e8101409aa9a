# Two commands do everything on a fresh machine:
#   make serve   set up .venv if missing, serve the embedded model with `vllm serve`
#   make test    set up .venv if missing, run the test suite
VENV      ?= .venv
PY        := $(VENV)/bin/python
STAMP     := $(VENV)/.dllm-setup-done
MODEL_DIR ?= vllm_dllm_plugin/assets/llada-arith
MODEL_NAME ?= llada-arith
PORT      ?= 8000
# Eager by default: on the 2-core CPU machine the embedded model is healthy in
# 23.5 s instead of 55.6 s with torch.compile (32.5 s on later starts), at
# 1/1.3 of the compiled throughput (docs/benchmarks.md, "Start-up: compile or eager").
# `make serve SERVE_FLAGS=` serves compiled.
SERVE_FLAGS ?= --enforce-eager
# CPU build of vLLM: GiB of RAM for the KV cache (GPU builds ignore it).
export VLLM_CPU_KVCACHE_SPACE ?= 2
export HF_HUB_OFFLINE ?= 1

.PHONY: setup serve test clean

$(STAMP): pyproject.toml scripts/setup_env.sh
	bash scripts/setup_env.sh
	touch $@

setup: $(STAMP)

serve: setup
	$(VENV)/bin/vllm serve $(MODEL_DIR) --served-model-name $(MODEL_NAME) \
		--host 127.0.0.1 --port $(PORT) --max-model-len 1024 $(SERVE_FLAGS)

test: setup
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) .cache *.egg-info
