"""Run a batch through a fresh engine in its own process; print JSON outputs.

Used by tests that need a separate engine (tensor parallelism spawns worker
processes, which must not share the test process's engine).

    python tests/run_engine.py MODEL_DIR --tp 2 < requests.json
"""

import argparse
import json
import sys

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--tp", type=int, default=1)
    parser.add_argument("--backend", default="mp")
    args = parser.parse_args()

    from vllm import LLM, SamplingParams

    requests = json.load(sys.stdin)
    llm = LLM(model=args.model, enforce_eager=True, max_model_len=512, dtype="float32",
              tensor_parallel_size=args.tp, distributed_executor_backend=args.backend)
    assert llm.llm_engine.vllm_config.parallel_config.world_size == args.tp
    outputs = llm.generate(
        [{"prompt_token_ids": r["prompt"]} for r in requests],
        [SamplingParams(temperature=0.0, max_tokens=r["max_tokens"], extra_args=r["options"])
         for r in requests],
        use_tqdm=False)
    print("RESULT " + json.dumps([list(o.outputs[0].token_ids) for o in outputs]))
