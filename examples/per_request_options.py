"""Different cache modes and rules per request, in one batch.

    python examples/per_request_options.py [MODEL_DIR]
"""

import sys

from vllm import LLM, SamplingParams

from vllm_dllm_plugin import EMBEDDED_MODEL

SETTINGS = {
    "baseline (no cache, 1 token/step)": {"diffusion_cache": "none",
                                          "diffusion_steps_per_block": 32},
    "prefix cache + threshold 0.9": {"diffusion_cache": "prefix", "diffusion_threshold": 0.9},
    "dual cache + threshold 0.9": {"diffusion_cache": "dual", "diffusion_threshold": 0.9},
    "prefix cache + factor 1.0": {"diffusion_cache": "prefix", "diffusion_factor": 1.0},
}

if __name__ == "__main__":
    model = sys.argv[1] if len(sys.argv) > 1 else str(EMBEDDED_MODEL)
    llm = LLM(model=model, max_model_len=1024)
    prompts = ["38+57="] * len(SETTINGS)  # a bare completion prompt
    params = [SamplingParams(temperature=0.0, max_tokens=64, extra_args=xargs)
              for xargs in SETTINGS.values()]
    for name, out in zip(SETTINGS, llm.generate(prompts, params)):
        print(f"{name:36s} {out.outputs[0].text!r}")
