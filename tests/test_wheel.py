"""The built wheel is the whole plugin: it installs into a fresh venv and serves.

The wheel is built from a copy of the checkout (no network, no build isolation),
checked for its subpackages and the embedded model, and installed into a fresh
venv.  That venv gets this environment's vLLM, torch and transformers without
downloading them: a ``.pth`` file in its site-packages names a directory of
symlinks to every entry of this venv's site-packages except the checkout's
editable install of the plugin (its dist-info, its ``__editable__`` finder and
``.pth``), so the only ``vllm-dllm-plugin`` the fresh venv sees is the wheel's.
(``.pth`` files in that directory are not run: only site-packages' are.)  Its ``vllm
serve`` then serves the embedded model found in the installed package.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import requests

from local_server import local_server

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "vllm_dllm_plugin"
ASSETS = f"{PACKAGE}/assets/llada-arith"
# The checkout's own install of the plugin: package, dist-info, editable finder and .pth.
PLUGIN_ENTRY = re.compile(r"^(__editable__[._]+)?vllm[-_]dllm[-_]plugin", re.IGNORECASE)
# Not copied from the checkout: at its top level, and anywhere.
NOT_COPIED_TOP = {".git", ".venv", "build", "dist", ".cache", ".pytest_cache"}
NOT_COPIED = {"__pycache__"}

CHECK_INSTALL = """
import importlib.metadata as md, json, sys
import vllm_dllm_plugin
print(json.dumps({
    "file": vllm_dllm_plugin.__file__,
    "dists": [str(d.locate_file("")) for d in md.distributions()
              if d.metadata["Name"].lower().replace("_", "-") == "vllm-dllm-plugin"],
    "entry_points": sorted([e.group, e.name, e.value] for d in md.distributions()
                           for e in d.entry_points
                           if e.group.startswith("vllm.") and "dllm" in e.value),
    "finders": [type(f).__name__ if not isinstance(f, type) else f.__name__ for f in sys.meta_path],
}))
"""


def _clean_env() -> dict:
    """No PYTHONPATH or venv of the checkout's leaks into the fresh venv's processes."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


def build_wheel(tmp: Path) -> Path:
    src = tmp / "src"
    shutil.copytree(ROOT, src, symlinks=True, ignore=lambda d, names: [
        n for n in names if n in NOT_COPIED or n.endswith(".egg-info")
        or (Path(d) == ROOT and n in NOT_COPIED_TOP)])
    dist = tmp / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-index",
                    "--no-build-isolation", "-w", str(dist), str(src)],
                   check=True, cwd=tmp, env=_clean_env(), timeout=300)
    wheels = list(dist.glob("vllm_dllm_plugin-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def check_wheel_contents(wheel: Path) -> str:
    """Every module and asset of the checkout's package is in the wheel; returns its entry points."""
    with zipfile.ZipFile(wheel) as z:
        infos = {i.filename: i for i in z.infolist()}
        dist_info = {n.split("/")[0] for n in infos if n.split("/")[0].endswith(".dist-info")}
        assert len(dist_info) == 1, dist_info
        entry_points = z.read(f"{next(iter(dist_info))}/entry_points.txt").decode()
        top = {n.split("/")[0] for n in infos}
    assert top == {PACKAGE} | dist_info, f"the wheel's top level: {top}"
    modules = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / PACKAGE).rglob("*.py")
                     if "__pycache__" not in p.parts)
    missing = [m for m in modules if m not in infos]
    assert not missing, f"not in the wheel (a subpackage left out by packages.find?): {missing}"
    subpackages = {m.rsplit("/", 1)[0] for m in modules if m.endswith("/__init__.py")}
    assert len(subpackages) > 1, subpackages
    assets = sorted(p for p in (ROOT / ASSETS).iterdir() if p.is_file())
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in assets}
    for p in assets:
        name = f"{ASSETS}/{p.name}"
        assert name in infos, f"{name} is not in the wheel"
        assert infos[name].file_size == p.stat().st_size, name
    return entry_points


def fresh_venv(tmp: Path) -> tuple[Path, Path]:
    """A venv that sees this venv's site-packages, less the plugin; returns (python, site-packages)."""
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   env=_clean_env(), timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True, cwd=tmp,
                               env=_clean_env()).stdout.strip())
    assert site.is_dir() and not any(site.iterdir()), site
    # Outside the fresh venv, so its pip would refuse to uninstall anything found there.
    shared = tmp / "shared-site-packages"
    shared.mkdir()
    for source in {Path(sysconfig.get_paths()[k]) for k in ("purelib", "platlib")}:
        for entry in source.iterdir():
            if not (PLUGIN_ENTRY.match(entry.name) or (shared / entry.name).exists()):
                (shared / entry.name).symlink_to(entry)
    assert (shared / "vllm").exists() and (shared / "torch").exists()
    assert not list(shared.glob("*dllm*")), "the checkout's plugin would leak into the fresh venv"
    (site / "_shared_site_packages.pth").write_text(f"{shared}\n")
    # The `vllm` console script, as pip wrote it here, run by the fresh venv's python.
    script = Path(sys.executable).with_name("vllm").read_text().splitlines(keepends=True)
    assert script[0].startswith("#!")
    vllm = venv / "bin" / "vllm"
    vllm.write_text(f"#!{python}\n" + "".join(script[1:]))
    vllm.chmod(0o755)
    return python, site


def test_built_wheel_installs_and_serves_the_embedded_model(tmp_path, monkeypatch):
    wheel = build_wheel(tmp_path)
    entry_points = check_wheel_contents(wheel)
    python, site = fresh_venv(tmp_path)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True, cwd=tmp_path, env=_clean_env(), timeout=300)

    # Run from tmp_path, not the checkout: the cwd is on sys.path of `python -c`.
    out = subprocess.run([str(python), "-c", CHECK_INSTALL], capture_output=True,
                         text=True, cwd=tmp_path, env=_clean_env(), timeout=300)
    assert out.returncode == 0, out.stderr[-4000:]
    installed = json.loads(out.stdout.splitlines()[-1])
    package = Path(installed["file"]).resolve().parent
    assert package == (site / PACKAGE).resolve(), installed["file"]
    assert not package.is_relative_to(ROOT), installed["file"]
    assert installed["dists"] == [str(site)], installed["dists"]
    assert "_EditableFinder" not in installed["finders"], installed["finders"]
    # Each of the wheel's entry points, once: no second copy from the editable install.
    expected = sorted([group, name.strip(), value.strip()]
                      for group, body in re.findall(r"\[([^\]]+)\]\n([^\[]*)", entry_points)
                      for name, value in (line.split("=", 1) for line in body.splitlines() if "=" in line))
    assert {g for g, _, _ in expected} == {"vllm.general_plugins", "vllm.stat_logger_plugins"}
    assert installed["entry_points"] == expected

    model = package / "assets" / "llada-arith"
    assert (model / "model.safetensors").is_file()
    for var in ("PYTHONPATH", "VIRTUAL_ENV"):
        monkeypatch.delenv(var, raising=False)
    # As `make serve` serves it (default dtype, --max-model-len 1024, eager), and README's
    # request: the bare prompt, a 64-token canvas, the default decoding (prefix, 0.9).
    with local_server(model, "llada-arith", vllm=python.with_name("vllm"), cwd=tmp_path,
                      dtype=None, max_model_len=1024, log_path=tmp_path / "serve.log",
                      startup_timeout=240) as url:
        r = requests.post(f"{url}/v1/completions", timeout=120, json={
            "model": "llada-arith", "prompt": "38+57=", "max_tokens": 64, "temperature": 0})
        r.raise_for_status()
        assert r.json()["choices"][0]["text"].strip() == "95", r.json()
        # The stat-logger entry point of the wheel is loaded too.
        metrics = requests.get(f"{url}/metrics", timeout=30).text
        assert "vllm:diffusion_committed_tokens" in metrics
