"""Fast-dLLM v2 (block diffusion): chat prompts with each cache mode.

    python examples/fast_dllm_v2.py [MODEL]   # default Efficient-Large-Model/Fast_dLLM_v2_1.5B

Without a hub connection, a tiny random-weight checkpoint in the same format
works too (its text is noise):

    python scripts/make_checkpoints.py fast-dllm-v2 /tmp/v2-tiny --preset tiny
    python examples/fast_dllm_v2.py /tmp/v2-tiny
"""

import sys

from vllm import LLM

SETTINGS = {
    "one token per forward": {"diffusion_cache": "prefix", "diffusion_threshold": 1.0},
    "threshold 0.9": {"diffusion_cache": "prefix", "diffusion_threshold": 0.9},
    "threshold 0.9, sub-block cache": {"diffusion_cache": "dual", "diffusion_threshold": 0.9},
}

if __name__ == "__main__":
    model = sys.argv[1] if len(sys.argv) > 1 else "Efficient-Large-Model/Fast_dLLM_v2_1.5B"
    llm = LLM(model=model, max_model_len=2048, enforce_eager=True)
    messages = [[{"role": "user", "content": "What is 12 * 7? Answer briefly."}]] * len(SETTINGS)
    # The engine's defaults: greedy, as the published loop (docs/options.md);
    # a bare SamplingParams() would be vLLM's temperature 1.0.
    defaults = llm.get_default_sampling_params()
    params = [defaults.clone() for _ in SETTINGS]
    for p, xargs in zip(params, SETTINGS.values()):
        p.max_tokens, p.extra_args = 128, xargs
    for name, out in zip(SETTINGS, llm.chat(messages, params, use_tqdm=False)):
        print(f"{name:32s} {out.outputs[0].text!r}")
