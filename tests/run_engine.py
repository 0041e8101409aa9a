"""Run a batch through a fresh engine in its own process; print JSON outputs.

Used by tests that need a separate engine (tensor parallelism spawns worker
processes, which must not share the test process's engine).

    python tests/run_engine.py MODEL_DIR --tp 2 [--dtype bfloat16] < requests.json
    python tests/run_engine.py MODEL_DIR --tp 2 --backend ray --ray-temp-dir DIR < requests.json

Prints ``RESULT <token ids per request>``. With ``--backend ray`` (which needs the
in-process engine core, ``VLLM_ENABLE_V1_MULTIPROCESSING=0``) it also prints
``ENGINE <executor evidence>`` (executor class, backend, world size, and per worker
its rank, pid, Ray actor id and torch.distributed world size) and ``SHM <segments>``
(the workers' shared memory; what the killed Ray workers left in /dev/shm is removed).
"""

import argparse
import json
import os
import sys


def _worker_info(worker):
    """Runs inside each worker (through collective_rpc): who and where it is."""
    import os

    import torch.distributed as dist

    info = dict(rank=worker.rank, local_rank=worker.local_rank, pid=os.getpid(),
                dist_world_size=dist.get_world_size() if dist.is_initialized() else None,
                worker_cls=type(getattr(worker, "worker", worker)).__qualname__)
    try:
        import ray

        info["ray_actor_id"] = ray.get_runtime_context().get_actor_id()
    except Exception:  # not inside a Ray actor
        info["ray_actor_id"] = None
    return info


def _engine_info(llm):
    config = llm.llm_engine.vllm_config
    executor = llm.llm_engine.engine_core.engine_core.model_executor
    return executor, dict(
        executor=type(executor).__name__,
        executor_mro=[c.__name__ for c in type(executor).__mro__],
        uses_ray=getattr(executor, "uses_ray", None),
        backend=config.parallel_config.distributed_executor_backend,
        world_size=config.parallel_config.world_size,
        driver_pid=os.getpid(),
        workers=executor.collective_rpc(_worker_info))


def _mapped_shm(worker):
    """Runs inside each worker: the /dev/shm segments it has mapped (message queues,
    the TP group's broadcaster and, on CPU, the TP all-reduce buffers)."""
    with open("/proc/self/maps") as maps:
        return sorted({line.split(None, 5)[5].strip() for line in maps
                       if " /dev/shm/" in line and not line.rstrip().endswith("(deleted)")})


def generate(llm, requests):
    from vllm import SamplingParams

    outputs = llm.generate(
        [{"prompt_token_ids": r["prompt"]} for r in requests],
        [SamplingParams(temperature=0.0, max_tokens=r["max_tokens"], extra_args=r["options"])
         for r in requests],
        use_tqdm=False)
    return [list(o.outputs[0].token_ids) for o in outputs]


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--tp", type=int, default=1)
    parser.add_argument("--backend", default="mp")
    parser.add_argument("--ray-temp-dir", help="Ray session dir (with --backend ray)")
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()

    from vllm import LLM

    requests = json.load(sys.stdin)
    engine_args = dict(model=args.model, enforce_eager=True, max_model_len=512,
                       dtype=args.dtype, tensor_parallel_size=args.tp,
                       distributed_executor_backend=args.backend)
    if args.backend != "ray":
        llm = LLM(**engine_args)
        assert llm.llm_engine.vllm_config.parallel_config.world_size == args.tp
        print("RESULT " + json.dumps(generate(llm, requests)), flush=True)
        sys.exit(0)

    from ray_cpu_shim import ray_session

    with ray_session(args.tp, args.ray_temp_dir):
        llm = LLM(**engine_args)
        executor, info = _engine_info(llm)
        print("ENGINE " + json.dumps(info), flush=True)
        print("RESULT " + json.dumps(generate(llm, requests)), flush=True)
        # RayExecutorV2 stops its workers with ray.kill, so the segments they created
        # are never unlinked: note them now, remove what is left after shutdown.
        shm = sorted(set().union(*executor.collective_rpc(_mapped_shm)))
        llm.llm_engine.engine_core.shutdown()  # kill the worker actors before Ray goes down
    left = [p for p in shm if os.path.exists(p)]
    for path in left:
        os.unlink(path)
    print("SHM " + json.dumps(dict(worker_segments=shm, left_behind_and_removed=left)), flush=True)
