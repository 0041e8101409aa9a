"""Shared pieces of the benchmark scripts: environment, modes, timing, output.

Every script measures its comparisons side by side in one run, prints a
markdown table, and (where it says so) writes a PNG into ``docs/figures/``.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "docs" / "figures"
# One in-process engine per script: its scheduler's counters are readable.
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "4")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

BLOCK_LENGTH = 32
# The modes of the Fast-dLLM comparison (block length 32).
MODES = {
    "baseline: none, 1 token/step": dict(cache="none", steps_per_block=BLOCK_LENGTH),
    "prefix, 1 token/step": dict(cache="prefix", steps_per_block=BLOCK_LENGTH),
    "none, threshold 0.9": dict(cache="none", threshold=0.9),
    "prefix, threshold 0.9": dict(cache="prefix", threshold=0.9),
    "dual, threshold 0.9": dict(cache="dual", threshold=0.9),
    "prefix, factor 1.0": dict(cache="prefix", factor=1.0),
}
BASELINE = next(iter(MODES))


def embedded_model() -> Path:
    from vllm_dllm_plugin import EMBEDDED_MODEL

    return EMBEDDED_MODEL


def heldout_problems(model_dir: Path, n: int | None = None) -> list[dict]:
    """The first ``n`` problems of ``heldout.jsonl`` (``question``, ``answer``)."""
    lines = (model_dir / "heldout.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines[:n]]


def chat_prompts(llm, questions) -> list[str]:
    """Each question as one user turn through the checkpoint's chat template."""
    tokenizer = llm.get_tokenizer()
    return [tokenizer.apply_chat_template([{"role": "user", "content": q}],
                                          add_generation_prompt=True, tokenize=False)
            for q in questions]


def model_arg(parser) -> None:
    parser.add_argument("--model", type=Path, default=None,
                        help="checkpoint with a heldout.jsonl (default: the embedded model)")


def model_dir_of(args) -> Path:
    return args.model or embedded_model()


def diffusion_params(mode: dict, max_tokens: int, **kwargs):
    from vllm import SamplingParams

    return SamplingParams(temperature=0.0, max_tokens=max_tokens,
                          extra_args={"diffusion_block_length": BLOCK_LENGTH,
                                      **{f"diffusion_{k}": v for k, v in mode.items()}},
                          **kwargs)


def timed(fn, *args, **kwargs):
    """``(seconds, result)`` of one call."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def median(values) -> float:
    return statistics.median(values)


def scheduler_counters(llm) -> tuple[int, int]:
    """(request-forwards, committed tokens) so far, from the plugin's scheduler."""
    stats = llm.llm_engine.engine_core.engine_core.scheduler.diffusion_stats
    return stats.forwards, stats.committed_tokens


def markdown_table(header: list[str], rows: list[list]) -> list[str]:
    """The lines of a markdown table."""
    return (["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
            + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def print_table(header: list[str], rows: list[list]) -> None:
    print("\n".join(markdown_table(header, rows)))
    print(flush=True)


def save_figure(fig, name: str) -> Path:
    FIGURES.mkdir(parents=True, exist_ok=True)
    path = FIGURES / name
    fig.savefig(path, dpi=110, bbox_inches="tight")
    print(f"wrote {path.relative_to(ROOT)}")
    return path


def plot_per_length(series: dict[str, dict[int, float]], *, xlabel: str, ylabel: str,
                    title: str, name: str, log2_x: bool = False) -> Path | None:
    """One line per mode over generation lengths (log y); ``series[mode][G]``.
    Skipped, with a note, when matplotlib (the ``bench`` extra) is missing."""
    try:
        import matplotlib
    except ImportError:
        print("matplotlib not installed (pip install -e .[bench]): no figure")
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    lengths = sorted({g for points in series.values() for g in points})
    for mode, points in series.items():
        gs = sorted(points)
        ax.plot(gs, [points[g] for g in gs], marker="o", label=mode)
    if log2_x:
        ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(lengths, [str(g) for g in lengths])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, name)
