"""Test-only shim: run vLLM's Ray executor on the CPU platform.

vLLM picks Ray bundles and actor resources by ``current_platform.ray_device_key``.
CUDA, ROCm and XPU set it to ``"GPU"``; the CPU platform leaves it empty, so
``initialize_ray_cluster`` stops with "current platform cpu does not support ray"
(``vllm/v1/executor/ray_utils.py``), as does the actor-side
``RayWorkerProc.get_node_and_physical_gpu_ids`` (``ray_executor_v2.py``).

The shim changes two things, and only on the CPU platform:

1. ``CpuPlatform.ray_device_key = "GPU"`` in the driver (where the in-process engine
   core calls ``initialize_ray_cluster`` and builds the placement group) and in every
   Ray worker process (where each ``RayWorkerProc`` actor asks Ray for its device ids),
   the latter through Ray's job-level ``worker_process_setup_hook``. The key must be an
   accelerator kind Ray knows: ``get_accelerator_ids()`` has no entry for a custom
   resource name, so "GPU" it is.
2. ``ray.init(num_gpus=world_size)`` declares that many *logical* GPU resources, so the
   placement group of ``{"GPU": 1}`` bundles can be placed. Ray only counts them; no
   device is touched (whatever ``CUDA_VISIBLE_DEVICES`` Ray sets in an actor, CPU
   torch ignores it).

Everything else is vLLM's own Ray path: ``RayExecutorV2`` (vLLM 0.32's default "ray"
executor, the only one in 0.33) creates one ``RayWorkerProc`` actor per rank in a
placement group and drives it through the multiprocessing executor's message queues;
the plugin's worker and model runner run inside those actors.

On a GPU host none of this is needed: the platform's key is already "GPU" and Ray finds
the real GPUs. ``ray_session`` then only starts Ray in a private temp dir, without the
hook or any faked resource.

The driver must run the engine core in-process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``):
a spawned engine-core process would import a fresh ``CpuPlatform`` without the key.
"""

from __future__ import annotations

import contextlib
import os


def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def mark_cpu_platform_ray_capable() -> None:
    """Give the CPU platform Ray's "GPU" device key (no-op on other platforms).

    Called in the driver and, as ``worker_process_setup_hook``, in every Ray worker.
    """
    from vllm.platforms import current_platform

    if current_platform.is_cpu() and not current_platform.ray_device_key:
        type(current_platform).ray_device_key = "GPU"


@contextlib.contextmanager
def ray_session(world_size: int, temp_dir: str):
    """Start a private local Ray cluster for one engine; always shut it down.

    ``temp_dir`` holds Ray's session files (logs, sockets); keep the path short (Unix
    socket paths are limited to ~107 bytes). The caller removes it afterwards.
    """
    import ray

    # Not part of the shim, just a lean private cluster: num_cpus=0 (vLLM's actors ask
    # for no CPU, and Ray then prestarts no idle workers, each of which would import
    # vLLM through the setup hook), no dashboard, a small object store in /dev/shm
    # (vLLM moves no data through it; Ray's default is 30% of RAM).
    kwargs: dict = dict(num_cpus=0, include_dashboard=False, _temp_dir=temp_dir,
                        object_store_memory=128 * 1024**2)
    if _on_cpu():
        mark_cpu_platform_ray_capable()
        # This module must be importable in the workers: it sits next to the runner
        # script and the caller puts tests/ on PYTHONPATH.
        kwargs.update(num_gpus=world_size, runtime_env={
            "worker_process_setup_hook": f"{__name__}.mark_cpu_platform_ray_capable"})
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(**kwargs)
    try:
        yield
    finally:
        ray.shutdown()
