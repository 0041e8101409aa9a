"""Offline generation with the `LLM` API.

    python examples/offline_inference.py [MODEL_DIR]   (default: the embedded model)
"""

import sys

from vllm import LLM, SamplingParams

if __name__ == "__main__":  # the engine runs in a spawned process
    model = sys.argv[1] if len(sys.argv) > 1 else ".cache/models/llada-tiny"
    llm = LLM(model=model, max_model_len=1024)
    params = SamplingParams(temperature=0.0, max_tokens=64)
    messages = [[{"role": "user", "content": "Write one sentence about the sea."}]]
    for out in llm.chat(messages, params):
        print(out.outputs[0].text)
