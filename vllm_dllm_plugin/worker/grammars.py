"""The worker's grammars: one per constrained request, from vLLM's backends.

Why in the worker: a constrained step commits a left-to-right run whose
length depends on this step's predictions and on what the grammar accepts
after each of them, so the grammar is consulted between the forward and the
commit.  vLLM keeps grammars in the engine core and sends one bitmask per
request before the step; that cannot check a run.

What: each worker (every tensor-parallel rank) builds the backend vLLM's
``StructuredOutputManager`` would build (``XgrammarBackend``,
``GuidanceBackend``, ...: the one the front end resolved into
``StructuredOutputsParams._backend``, with ``--structured-outputs-config``'s
settings), compiles the request's grammar once at admission
(``compile_grammar``, with ``SamplingParams.all_stop_token_ids``), and uses
only the backend-neutral ``StructuredOutputGrammar`` interface:
``fill_bitmask`` (the first undecided position's allowed tokens),
``validate_tokens`` (how much of a run it accepts, without advancing),
``accept_tokens`` (the committed run), ``reset`` (resumption).  Ranks hold
identical grammars advanced by identical tokens.  The engine core compiles
none (``patch/structured_output_manager.py``).
"""

from __future__ import annotations

import numpy as np
import torch

from vllm.tokenizers import cached_tokenizer_from_config
from vllm.v1.structured_output.backend_types import StructuredOutputGrammar
from vllm.v1.structured_output.request import get_structured_output_key

_BITS = 32   # tokens per bitmask word (vLLM's and the backends' layout)


def _backend_class(name: str):
    if name.startswith("xgrammar"):
        from vllm.v1.structured_output.backend_xgrammar import XgrammarBackend
        return XgrammarBackend
    if name.startswith("guidance"):
        from vllm.v1.structured_output.backend_guidance import GuidanceBackend
        return GuidanceBackend
    if name == "outlines":
        from vllm.v1.structured_output.backend_outlines import OutlinesBackend
        return OutlinesBackend
    if name == "lm-format-enforcer":
        from vllm.v1.structured_output.backend_lm_format_enforcer import (
            LMFormatEnforcerBackend)
        return LMFormatEnforcerBackend
    raise ValueError(f"unknown structured output backend {name!r}")


def allowed_tokens(bitmask: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """``[n, words]`` int32 bitmask (bit ``j`` of word ``w``: token
    ``32 w + j`` allowed) -> ``[n, vocab_size]`` bool."""
    shifts = torch.arange(_BITS, dtype=torch.int32, device=bitmask.device)
    bits = (bitmask.unsqueeze(-1) >> shifts) & 1
    return bits.reshape(bitmask.shape[0], -1)[:, :vocab_size].bool()


class Grammars:
    """The backends of one worker (built on first use, one per name) and the
    grammar operations a step needs."""

    def __init__(self, vllm_config):
        self.vllm_config = vllm_config
        self.vocab_size = vllm_config.model_config.get_vocab_size()
        self._backends: dict[str, object] = {}

    def compile(self, sampling_params) -> StructuredOutputGrammar | None:
        """The request's grammar, or None when it carries none."""
        params = sampling_params.structured_outputs
        if params is None or params.all_constraints_none():
            return None
        name = params._backend or self.vllm_config.structured_outputs_config.backend
        backend = self._backends.get(name)
        if backend is None:
            backend = _backend_class(name)(
                self.vllm_config,
                tokenizer=cached_tokenizer_from_config(self.vllm_config.model_config),
                vocab_size=self.vocab_size)
            self._backends[name] = backend
        request_type, spec = get_structured_output_key(params)
        return backend.compile_grammar(request_type, spec,
                                       stop_token_ids=sampling_params.all_stop_token_ids)

    def allowed(self, grammars: list[StructuredOutputGrammar], device) -> torch.Tensor:
        """``[len(grammars), vocab]`` bool: the next tokens each grammar
        allows after what it accepted."""
        words = (self.vocab_size + _BITS - 1) // _BITS
        bitmask = torch.full((len(grammars), words), -1, dtype=torch.int32)
        for i, grammar in enumerate(grammars):
            if not grammar.is_terminated():   # else no mask, as vLLM
                grammar.fill_bitmask(bitmask, i)
        return allowed_tokens(bitmask.to(device, non_blocking=True), self.vocab_size)

    @staticmethod
    def accept_run(req_id: str, grammar: StructuredOutputGrammar, tokens: np.ndarray) -> int:
        """Advance ``grammar`` by the longest prefix of ``tokens`` it accepts
        (the first is the masked row's, always accepted); return its length.
        A terminated grammar (an end token accepted) constrains nothing."""
        if grammar.is_terminated():
            return len(tokens)
        run = tokens.tolist()
        accepted = grammar.validate_tokens(run)
        count = max(len(accepted), 1)
        grammar.accept_tokens(req_id, run[:count])
        return count

    @staticmethod
    def replay(req_id: str, grammar: StructuredOutputGrammar, token_ids) -> None:
        """Resumption after preemption: the grammar after the request's
        output tokens."""
        grammar.reset()
        if token_ids:
            grammar.accept_tokens(req_id, list(token_ids))
