"""Run a batch through a fresh engine in its own process; print JSON outputs.

Used by tests that need a separate engine (tensor parallelism spawns worker
processes, which must not share the test process's engine).  A request may
carry ``structured_outputs`` (``StructuredOutputsParams`` keywords).

    python tests/run_engine.py MODEL_DIR --tp 2 [--dtype bfloat16] < requests.json
    python tests/run_engine.py MODEL_DIR --tp 2 --backend ray --ray-temp-dir DIR < requests.json
    python tests/run_engine.py MODEL_DIR --max-num-batched-tokens 64 --forwards < requests.json

Prints ``RESULT <token ids per request>``; with ``--forwards`` (in-process
engine core) also ``FORWARDS <forward passes per request>``; with
``--one-by-one`` also ``CACHED <prompt tokens found in the prefix cache>``. With ``--backend ray`` (which needs the
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


def generate(llm, requests, one_by_one=False):
    """Token ids per request (and prompt tokens each found in the prefix
    cache); all at once, or one ``generate`` call after another."""
    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    def run(batch):
        return llm.generate(
            [{"prompt_token_ids": r["prompt"]} for r in batch],
            [SamplingParams(temperature=0.0, max_tokens=r["max_tokens"],
                            extra_args=r["options"],
                            structured_outputs=StructuredOutputsParams(**r["structured_outputs"])
                            if r.get("structured_outputs") else None) for r in batch],
            use_tqdm=False)

    outputs = ([run([r])[0] for r in requests] if one_by_one else run(requests))
    return ([list(o.outputs[0].token_ids) for o in outputs],
            [o.num_cached_tokens or 0 for o in outputs])


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--tp", type=int, default=1)
    parser.add_argument("--backend", default="mp")
    parser.add_argument("--ray-temp-dir", help="Ray session dir (with --backend ray)")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--max-num-batched-tokens", type=int)
    parser.add_argument("--max-num-seqs", type=int)
    parser.add_argument("--forwards", action="store_true")
    parser.add_argument("--block-size", type=int)
    parser.add_argument("--enable-prefix-caching", action="store_true")
    parser.add_argument("--one-by-one", action="store_true",
                        help="one generate call per request (later ones may hit the "
                             "prefix cache), also prints CACHED")
    args = parser.parse_args()

    from vllm import LLM

    requests = json.load(sys.stdin)
    engine_args = dict(model=args.model, enforce_eager=True, max_model_len=512,
                       dtype=args.dtype, tensor_parallel_size=args.tp,
                       distributed_executor_backend=args.backend)
    if args.enable_prefix_caching:
        engine_args["enable_prefix_caching"] = True
    for name in ("max_num_batched_tokens", "max_num_seqs", "block_size"):
        if getattr(args, name) is not None:
            engine_args[name] = getattr(args, name)
    if args.backend != "ray":
        llm = LLM(**engine_args)
        assert llm.llm_engine.vllm_config.parallel_config.world_size == args.tp
        tokens, cached = generate(llm, requests, args.one_by_one)
        print("RESULT " + json.dumps(tokens), flush=True)
        if args.one_by_one:
            print("CACHED " + json.dumps(cached), flush=True)
        if args.forwards:
            finished = llm.llm_engine.engine_core.engine_core.scheduler.diffusion_stats.finished
            # in submission order: the LLM API's ids are "<index>-<suffix>"
            by_index = {int(k.rsplit("-", 1)[0]): v.forwards for k, v in finished.items()}
            print("FORWARDS " + json.dumps([by_index[i] for i in range(len(requests))]),
                  flush=True)
        sys.exit(0)

    from ray_cpu_shim import ray_session

    with ray_session(args.tp, args.ray_temp_dir):
        llm = LLM(**engine_args)
        executor, info = _engine_info(llm)
        print("ENGINE " + json.dumps(info), flush=True)
        print("RESULT " + json.dumps(generate(llm, requests)[0]), flush=True)
        # RayExecutorV2 stops its workers with ray.kill, so the segments they created
        # are never unlinked: note them now, remove what is left after shutdown.
        shm = sorted(set().union(*executor.collective_rpc(_mapped_shm)))
        llm.llm_engine.engine_core.shutdown()  # kill the worker actors before Ray goes down
    left = [p for p in shm if os.path.exists(p)]
    for path in left:
        os.unlink(path)
    print("SHM " + json.dumps(dict(worker_segments=shm, left_behind_and_removed=left)), flush=True)
