"""The engine core compiles no grammar: the workers hold them.

Why: a constrained diffusion step commits a left-to-right run that the
grammar must check between the forward and the commit, so each worker
compiles and advances the request's grammar itself
(``worker/grammars.py``).  vLLM's engine core would compile a second copy
(``EngineCore.preprocess_add_request`` -> ``StructuredOutputManager.grammar_init``,
in a thread pool), hold the request in ``WAITING_FOR_STRUCTURED_OUTPUT_GRAMMAR``
until it is ready, and fill a bitmask every step that nothing reads.

What: ``grammar_init`` of the one manager our scheduler is given becomes a
no-op (an instance attribute; vLLM's class is untouched).  The scheduler
drops the request's ``structured_output_request`` at admission, so vLLM
neither waits for a grammar nor computes bitmasks; ``SamplingParams`` still
carry ``structured_outputs`` to the workers.

When it can go: once vLLM lets a runner own its requests' grammars (e.g. a
scheduler hook that declines the core's structured-output handling).
"""

from __future__ import annotations

_MARK = "__dllm_grammars_in_workers__"


def apply(structured_output_manager) -> None:
    if getattr(structured_output_manager.grammar_init, _MARK, False):
        return

    def grammar_init(request) -> None:
        """Compiled by the workers instead."""

    setattr(grammar_init, _MARK, True)
    structured_output_manager.grammar_init = grammar_init
