"""Start `vllm serve` on loopback for a test, a benchmark or the load test.

    with local_server(model_dir, "tiny-llada", log_path="serve.log") as url:
        requests.post(f"{url}/v1/completions", json=...)

The server runs as a child process with the venv's own `vllm` command and is
terminated when the block exits.  Bounded: it must answer /health within
``startup_timeout`` seconds.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def local_server(model_dir, name: str, *, log_path=None, max_model_len: int = 512,
                 dtype: str | None = "float32", enforce_eager: bool = True,
                 extra_args=(), env=None, startup_timeout: float = 300.0,
                 vllm=None, cwd=None):
    """Serve ``model_dir`` as ``name``; yield the base URL (``http://127.0.0.1:P``).

    ``vllm`` is the command to run (default: this venv's); ``cwd`` its directory.
    On start-up failure raises ``RuntimeError`` with the tail of the log.
    """
    port = free_port()
    cmd = [str(vllm or Path(sys.executable).with_name("vllm")), "serve", str(model_dir),
           "--host", "127.0.0.1", "--port", str(port),
           "--max-model-len", str(max_model_len), "--served-model-name", name]
    if dtype:
        cmd += ["--dtype", dtype]
    if enforce_eager:
        cmd.append("--enforce-eager")
    cmd += list(extra_args)
    environ = dict(os.environ, VLLM_ENABLE_V1_MULTIPROCESSING="1", HF_HUB_OFFLINE="1")
    environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    environ.update(env or {})
    log = open(log_path, "w") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=environ, cwd=cwd)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + startup_timeout
        while not _healthy(url):
            if proc.poll() is not None or time.time() > deadline:
                tail = Path(log_path).read_text()[-4000:] if log_path else ""
                raise RuntimeError(f"vllm serve did not come up ({' '.join(cmd)}):\n{tail}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log_path:
            log.close()
