"""SDAR and LLaDA2.x: the same chat prompt under each published loop's settings.

    python examples/block_diffusion_families.py JetLM/SDAR-1.7B-Chat
    python examples/block_diffusion_families.py inclusionAI/LLaDA2.1-mini

Without a hub connection, tiny random-weight checkpoints in the same formats
work too (their text is noise):

    python scripts/make_checkpoints.py sdar /tmp/sdar-tiny --preset tiny
    python examples/block_diffusion_families.py /tmp/sdar-tiny
    python scripts/make_checkpoints.py llada2 /tmp/llada2-tiny --preset tiny
    python examples/block_diffusion_families.py /tmp/llada2-tiny
"""

import sys

from vllm import LLM

SETTINGS = {
    "sdar": {
        "dynamic, threshold 0.85 (default)": {},
        "dynamic, threshold 0.9": {"diffusion_threshold": 0.9},
        "static, 4 steps (one token a step)": {"diffusion_remasking": "low_confidence_static"},
        "sequential, 2 steps": {"diffusion_remasking": "sequential",
                                "diffusion_steps_per_block": 2},
    },
    "llada2_moe": {
        "LLaDA2.0, threshold 0.95 (default)": {},
        "LLaDA2.0, threshold 0.7": {"diffusion_threshold": 0.7},
        "LLaDA2.1, threshold 0.7, editing 0.5": {"diffusion_threshold": 0.7,
                                                 "diffusion_editing_threshold": 0.5},
    },
}

if __name__ == "__main__":
    model = sys.argv[1] if len(sys.argv) > 1 else "JetLM/SDAR-1.7B-Chat"
    llm = LLM(model=model, max_model_len=2048, enforce_eager=True)
    settings = SETTINGS[llm.llm_engine.model_config.hf_config.model_type]
    messages = [[{"role": "user", "content": "What is 12 * 7? Answer briefly."}]] * len(settings)
    # The engine's defaults: greedy, as the published loops (docs/options.md).
    defaults = llm.get_default_sampling_params()
    params = [defaults.clone() for _ in settings]
    for p, xargs in zip(params, settings.values()):
        p.max_tokens, p.extra_args = 128, xargs
    for name, out in zip(settings, llm.chat(messages, params, use_tqdm=False)):
        print(f"{name:40s} {out.outputs[0].text!r}")
