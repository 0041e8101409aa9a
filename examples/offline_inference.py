"""Offline generation with the `LLM` API.

    python examples/offline_inference.py [MODEL_DIR]   (default: the embedded model)
"""

import sys

from vllm import LLM, SamplingParams

from vllm_dllm_plugin import EMBEDDED_MODEL

if __name__ == "__main__":  # the engine runs in a spawned process
    model = sys.argv[1] if len(sys.argv) > 1 else str(EMBEDDED_MODEL)
    llm = LLM(model=model, max_model_len=1024)
    params = SamplingParams(temperature=0.0, max_tokens=64)
    questions = ["38+57=", "sort 52817", "9+8="]
    messages = [[{"role": "user", "content": q}] for q in questions]
    for q, out in zip(questions, llm.chat(messages, params)):
        print(f"{q:>12}  {out.outputs[0].text}")
