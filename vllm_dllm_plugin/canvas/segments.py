"""A step's attention segments: each window, or each block of a block-causal write.

The attention layers run non-causally: each query row of a segment attends
to the request's K/V slots ``[0, seq_len)``.  A window that writes several
prompt blocks in one forward (:meth:`Window.segments`) is exact only if each
block is its own segment, with its own key end.  :class:`SegmentPlan`
describes the step's segments; the runner makes it current for the build of
the attention metadata (:func:`planned`), and the layers' metadata builder
rewrites the per-request ``CommonAttentionMetadata`` it receives with it
(:meth:`SegmentPlan.apply`): query starts, key ends and block-table rows per
segment, the rows of one request repeated.  K/V slots, positions and logits
rows stay per token and per request, so nothing else sees the segments.

No vLLM import: the metadata object is handled by its field names
(``vllm.v1.attention.backend.CommonAttentionMetadata``).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from vllm_dllm_plugin.canvas.base import Window

_current: "SegmentPlan | None" = None


@dataclasses.dataclass(frozen=True)
class SegmentPlan:
    num_reqs: int                     # the real requests the plan was made for
    query_start_loc: torch.Tensor     # [S + 1] int32, CPU
    seq_lens: torch.Tensor            # [S] int32, CPU: each segment's key end
    request_rows: torch.Tensor        # [S] int64, CPU: each segment's request

    @classmethod
    def of_windows(cls, windows: Sequence[Window]) -> "SegmentPlan | None":
        """The plan of a step whose requests run ``windows`` (batch order), or
        None when every window is one segment (vLLM's metadata is exact)."""
        segments = [w.segments() for w in windows]
        if all(len(s) == 1 for s in segments):
            return None
        rows = np.repeat(np.arange(len(windows)), [len(s) for s in segments])
        flat = [seg for s in segments for seg in s]
        sizes = np.array([end - start for start, end, _ in flat], dtype=np.int32)
        starts = np.concatenate(([0], np.cumsum(sizes))).astype(np.int32)
        keys = np.array([keys_end for _, _, keys_end in flat], dtype=np.int32)
        return cls(len(windows), torch.from_numpy(starts), torch.from_numpy(keys),
                   torch.from_numpy(rows.astype(np.int64)))

    def apply(self, cm):
        """``cm`` (one row per request) with one row per segment."""
        if cm.num_reqs != self.num_reqs:
            raise ValueError(f"the step's attention metadata has {cm.num_reqs} rows, "
                             f"the segment plan was made for {self.num_reqs} requests")
        device = cm.query_start_loc.device
        rows = self.request_rows.to(device)
        is_prefilling = cm.is_prefilling
        if is_prefilling is not None:
            is_prefilling = is_prefilling.index_select(
                0, self.request_rows.to(is_prefilling.device))
        sizes = self.query_start_loc[1:] - self.query_start_loc[:-1]
        return dataclasses.replace(
            cm,
            query_start_loc=self.query_start_loc.to(device),
            query_start_loc_cpu=self.query_start_loc,
            seq_lens=self.seq_lens.to(device),
            seq_lens_cpu_upper_bound=self.seq_lens,
            num_reqs=len(self.seq_lens),
            max_query_len=int(sizes.max()),
            max_seq_len=int(self.seq_lens.max()),
            block_table_tensor=cm.block_table_tensor.index_select(0, rows),
            is_prefilling=is_prefilling,
            _num_computed_tokens_cache=None,
            _token_to_req_indices_cache=None,
        )


@contextlib.contextmanager
def planned(plan: SegmentPlan | None) -> Iterator[None]:
    """Make ``plan`` the current one while the attention metadata is built."""
    global _current
    previous, _current = _current, plan
    try:
        yield
    finally:
        _current = previous


def current() -> SegmentPlan | None:
    return _current
