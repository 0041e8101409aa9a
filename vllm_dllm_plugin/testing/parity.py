"""The one engine-vs-reference comparison every parity test uses.

A float32 engine and the float32 reference run different CPU kernels, so a
confidence within ~1e-4 of a threshold can fall on either side of it
depending on the machine (Intel or AMD).  That is rounding, not a bug, but a
plain comparison cannot tell the two apart.  So where the engine's output
differs from the float32 reference, the reference runs again in float64 on
the same checkpoint and prompt, and the engine is accepted only if it equals
that run exactly (tokens and, where given, forward count).  Any difference
the float64 reference does not explain still fails, and every acceptance is
reported (stderr, an :class:`ArbitratedWarning`, :data:`ARBITRATED`).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Sequence
from functools import lru_cache

import torch

# One line per comparison the float64 reference decided, in order.
ARBITRATED: list[str] = []


class ArbitratedWarning(UserWarning):
    """The float32 reference disagreed with the engine; the float64 one agreed."""


@lru_cache(maxsize=8)
def _float64_model(cls: type, checkpoint: str):
    return cls.from_pretrained(checkpoint, torch.float64)


def float64_twin(model):
    """``model``'s checkpoint loaded again in float64 (cached per checkpoint)."""
    checkpoint = getattr(model, "checkpoint", None)
    if checkpoint is None:
        raise ValueError(f"{type(model).__name__} was not loaded with from_pretrained: no checkpoint to reload")
    return _float64_model(type(model), str(checkpoint))


def _mismatch(got: list[int], got_forwards: int | None, want, expected_forwards) -> str | None:
    """What differs between the engine's output and one reference result, or None."""
    if got != list(want.tokens):
        at = next((i for i, (a, b) in enumerate(zip(got, want.tokens)) if a != b), min(len(got), len(want.tokens)))
        return (f"tokens differ from index {at} (engine {got[at:at + 4]}..., reference "
                f"{list(want.tokens[at:at + 4])}...; lengths {len(got)} / {len(want.tokens)})")
    if got_forwards is not None and got_forwards != expected_forwards(want):
        return f"forward count differs (engine {got_forwards}, reference {expected_forwards(want)})"
    return None


def assert_matches_reference(
    got: Sequence[int],
    run: Callable[[object], object],
    model,
    *,
    got_forwards: int | None = None,
    expected_forwards: Callable[[object], int] = lambda want: want.forwards,
    what: str = "",
):
    """Assert the engine's tokens ``got`` (and ``got_forwards`` if given)
    equal ``run(model)``, a reference loop with a ``tokens`` result; where
    they do not and ``model`` is float32, equal ``run(float64 model)``
    instead.  ``expected_forwards`` maps a result to the engine's count.
    Returns the reference result the engine matched."""
    got = list(got)
    want = run(model)
    problem = _mismatch(got, got_forwards, want, expected_forwards)
    if problem is None:
        return want
    if model.dtype != torch.float32:
        raise AssertionError(f"{what}: {problem}")
    exact = run(float64_twin(model))
    still = _mismatch(got, got_forwards, exact, expected_forwards)
    if still is not None:
        raise AssertionError(f"{what}: {problem}; the float64 reference does not explain it: {still}")
    note = (f"parity arbiter: {what}: engine != float32 reference ({problem}); "
            f"engine == float64 reference: accepted")
    ARBITRATED.append(note)
    print(note, file=sys.stderr, flush=True)
    warnings.warn(note, ArbitratedWarning, stacklevel=2)
    return exact
