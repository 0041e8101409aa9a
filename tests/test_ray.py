"""TP=2 through vLLM's Ray executor gives the reference's tokens (= TP=1).

The engine runs in a subprocess (``tests/run_engine.py --backend ray``) with its own
private Ray cluster: session files in a fresh temp dir, two Ray worker actors for the
two TP ranks, everything stopped and removed afterwards. On this CPU machine the
test-only shim ``tests/ray_cpu_shim.py`` lets vLLM's Ray path accept the CPU platform;
on a GPU host the shim does nothing and the same test runs on the real GPUs.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from test_tensor_parallel import assert_reference_tokens, mixed_requests

HERE = Path(__file__).parent
TIMEOUT_S = 420


def _pids_with_env(marker: str) -> list[int]:
    """Live processes started with ``marker`` in their environment (our Ray cluster:
    GCS, raylet, workers all inherit the subprocess's environment)."""
    needle = marker.encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            if needle in Path(f"/proc/{entry}/environ").read_bytes():
                pids.append(int(entry))
        except OSError:
            pass
    return pids


def run_engine_ray(model_dir, requests, tp):
    ray_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray puts sockets here
    marker = f"DLLM_RAY_TEST={uuid.uuid4().hex}"
    env = dict(os.environ,
               VLLM_ENABLE_V1_MULTIPROCESSING="0",  # engine core in the shimmed driver
               VLLM_CPU_OMP_THREADS_BIND="0|1",     # one core per TP rank (CPU only)
               RAY_USAGE_STATS_ENABLED="0",
               RAY_AUTH_MODE="disabled",  # short-lived test cluster: no token written to ~/.ray
               PYTHONPATH=os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
               DLLM_RAY_TEST=marker.split("=", 1)[1])
    try:
        proc = subprocess.run(
            [sys.executable, str(HERE / "run_engine.py"), str(model_dir), "--tp", str(tp),
             "--backend", "ray", "--ray-temp-dir", ray_dir],
            input=json.dumps(requests), capture_output=True, text=True, env=env,
            timeout=TIMEOUT_S)
    finally:
        leftovers = _pids_with_env(marker)
        for pid in leftovers:  # only processes of this run's Ray cluster
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(ray_dir, ignore_errors=True)
    lines = {}
    for line in proc.stdout.splitlines():
        key, _, payload = line.partition(" ")
        if key in ("RESULT", "ENGINE", "SHM"):
            lines[key] = json.loads(payload)
    assert proc.returncode == 0 and "RESULT" in lines, proc.stderr[-4000:] + proc.stdout[-4000:]
    assert not leftovers, f"Ray processes left behind: {leftovers}"
    return lines


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="TP=2 needs two cores")
def test_ray_tp2_equals_reference(llada_dir, llada_ref, llada_eos):
    import ray  # noqa: F401  (the test extra installs it; a missing ray fails here)
    out = run_engine_ray(llada_dir, mixed_requests(), tp=2)
    print("\nray engine:", json.dumps(out["ENGINE"]), "\nshm:", json.dumps(out["SHM"]))

    engine = out["ENGINE"]
    assert engine["backend"] == "ray" and engine["uses_ray"] is True
    assert engine["executor"] in ("RayExecutorV2", "RayDistributedExecutor"), engine
    assert engine["world_size"] == 2
    workers = engine["workers"]
    assert sorted(w["rank"] for w in workers) == [0, 1]
    assert all(w["dist_world_size"] == 2 for w in workers)
    assert all(w["ray_actor_id"] for w in workers), "workers are not Ray actors"
    assert len({w["pid"] for w in workers} | {engine["driver_pid"]}) == 3

    assert_reference_tokens(out["RESULT"], llada_ref, llada_eos, "at TP=2 on Ray", llada_dir)
