"""Small helpers shared by the patch modules: find a vLLM attribute, wrap it
once (a marker makes every ``apply()`` idempotent)."""

from __future__ import annotations

import functools
import importlib

_MARK = "__dllm_patch__"


def resolve(module: str, name: str):
    """``module.name``, or None when this vLLM lacks it."""
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


def is_wrapped(fn) -> bool:
    return getattr(fn, _MARK, False)


def wrapped(original, replacement):
    """``replacement`` dressed as ``original`` and marked as ours."""
    fn = functools.wraps(original)(replacement)
    setattr(fn, _MARK, True)
    return fn


def wrap_attribute(owner, attr: str, make) -> bool:
    """Replace ``owner.attr`` by ``make(original)`` unless already done;
    False when ``owner`` lacks it."""
    original = getattr(owner, attr, None) if owner is not None else None
    if original is None:
        return False
    if not is_wrapped(original):
        setattr(owner, attr, wrapped(original, make(original)))
    return True
