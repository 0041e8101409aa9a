"""Dataset of the ``llada_arith`` lm-eval task: the embedded model's held-out problems.

lm-eval calls ``heldout`` (``custom_dataset: !function utils.heldout``) with the
task's ``metadata`` and ``dataset_kwargs``; ``heldout_path`` (e.g.
``--metadata '{"heldout_path": "..."}'``) reads another checkpoint's file of the
same layout: one ``{"question": ..., "answer": ...}`` object a line.
"""

import json
from pathlib import Path

import datasets

HELDOUT = (Path(__file__).resolve().parents[2]
           / "vllm_dllm_plugin" / "assets" / "llada-arith" / "heldout.jsonl")


def heldout(heldout_path=None, **kwargs) -> datasets.DatasetDict:
    lines = Path(heldout_path or HELDOUT).read_text().splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})
