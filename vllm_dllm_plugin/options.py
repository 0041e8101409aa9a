"""Per-request diffusion options and their engine-wide defaults.

Requests carry options in ``SamplingParams.extra_args`` (``vllm_xargs`` in the
OpenAI API); the engine defaults come from ``--additional-config`` under the
same names.  Everything is validated here, once, so that a bad value is a
clear error naming the option instead of a failure deep in the engine.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Mapping
from typing import Any

CACHE_MODES = ("none", "prefix", "dual")
RULES = ("threshold", "factor", "fixed")
RULE_KEYS = ("diffusion_threshold", "diffusion_factor", "diffusion_steps_per_block")
RULE_OF_KEY = dict(zip(RULE_KEYS, RULES))
_KEY_OF_RULE = dict(zip(RULES, RULE_KEYS))
# Block-diffusion loops with a step schedule (SDAR, LLaDA2.x): the
# remasking strategy (SDAR's published names) and LLaDA2.1's token editing.
REMASKING = ("low_confidence_dynamic", "low_confidence_static", "sequential")
EDITING_KEYS = ("diffusion_editing_threshold", "diffusion_max_post_steps")
OPTION_KEYS = ("diffusion_cache", "diffusion_block_length", "diffusion_sub_block_length",
               *RULE_KEYS, "diffusion_remasking", *EDITING_KEYS)

DEFAULT_CACHE = "prefix"
DEFAULT_BLOCK_LENGTH = 32
DEFAULT_SUB_BLOCK_LENGTH = 8
DEFAULT_THRESHOLD = 0.9
DEFAULT_REMASKING = "low_confidence_dynamic"
DEFAULT_MAX_POST_STEPS = 16
# The canvas of a request that sets no max_tokens (unless the checkpoint's
# generation_config.json has max_new_tokens): vLLM's own default would be the
# whole remaining context on chat, 16 tokens on /v1/completions.
DEFAULT_MAX_TOKENS = 256


class DiffusionOptionError(ValueError):
    """A request field diffusion decoding cannot take as given; ``parameter``
    names it (an HTTP 400 in the OpenAI server)."""

    def __init__(self, parameter: str, message: str):
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter
        self.message = message


@dataclasses.dataclass(frozen=True)
class OptionSpace:
    """What a family's decoding loop can follow (part of its description).

    Full-attention families (LLaDA, Dream) take every cache mode, rule and
    block length.  Block diffusion (Fast-dLLM v2) was trained with one block
    length (``bd_size``), has sub-blocks, and its published loop has only the
    threshold rule; ``none`` would mean recomputing exact K/V every step.

    ``step_schedule``: ``diffusion_steps_per_block`` is a per-step quota
    schedule next to the threshold (SDAR, LLaDA2.0), not a rule of its own.
    ``remasking``: the strategies a family names (SDAR).  ``editing``: the
    LLaDA2.1 loop (token editing, post steps) is available.
    """

    cache_modes: tuple[str, ...] = CACHE_MODES
    rules: tuple[str, ...] = RULES
    block_length: int | None = None   # the only block length, if fixed
    sub_blocks: bool = False
    # temperature > 0: "gumbel" (Fast-dLLM's LLaDA/Dream sampling, no top-p)
    # or "top_p" (Fast-dLLM v2's nucleus sampling)
    sampler: str = "gumbel"
    step_schedule: bool = False
    remasking: tuple[str, ...] = ()
    editing: bool = False
    default_threshold: float = DEFAULT_THRESHOLD
    family: str = "this model"        # for error messages

    def check(self, options: "DiffusionOptions") -> None:
        """Raise for an option the family cannot follow (naming the field)."""
        if options.cache not in self.cache_modes:
            raise DiffusionOptionError(
                "diffusion_cache", f"{options.cache!r} is not a cache mode of {self.family}; "
                                   f"use one of {', '.join(self.cache_modes)}")
        if options.rule not in self.rules:
            allowed = ", ".join(k for k, r in RULE_OF_KEY.items() if r in self.rules)
            raise DiffusionOptionError(
                _KEY_OF_RULE[options.rule], f"{self.family} decodes with {allowed} only")
        if self.block_length is not None and options.block_length != self.block_length:
            raise DiffusionOptionError(
                "diffusion_block_length",
                f"{self.family} decodes blocks of its checkpoint's length "
                f"{self.block_length} only, got {options.block_length}")


FULL_ATTENTION_OPTIONS = OptionSpace()


@dataclasses.dataclass(frozen=True)
class DiffusionOptions:
    """How one request is decoded.

    ``rule`` is ``"threshold"``, ``"factor"`` or ``"fixed"``; ``rule_value`` is
    the threshold, the factor, or the number of steps per block.
    ``sub_block_length``: block diffusion only.  ``steps``: the step schedule
    of a ``step_schedule`` family (None: one step per block position).
    ``remasking``: SDAR's strategy.  ``editing_threshold`` (None: no
    editing) and ``max_post_steps``: the LLaDA2.1 loop.  ``space``: what the
    engine's model family allows (carried by the engine defaults, so that
    resolving a request against them checks it too).
    """

    cache: str = DEFAULT_CACHE
    block_length: int = DEFAULT_BLOCK_LENGTH
    rule: str = "threshold"
    rule_value: float = DEFAULT_THRESHOLD
    sub_block_length: int = DEFAULT_SUB_BLOCK_LENGTH
    steps: int | None = None
    remasking: str = DEFAULT_REMASKING
    editing_threshold: float | None = None
    max_post_steps: int = DEFAULT_MAX_POST_STEPS
    space: OptionSpace = dataclasses.field(default=FULL_ATTENTION_OPTIONS, compare=False,
                                           repr=False)

    @property
    def threshold(self) -> float | None:
        return self.rule_value if self.rule == "threshold" else None

    @property
    def factor(self) -> float | None:
        return self.rule_value if self.rule == "factor" else None

    @property
    def steps_per_block(self) -> int | None:
        return int(self.rule_value) if self.rule == "fixed" else None


_EXPECTED = {
    "diffusion_cache": f"one of {', '.join(CACHE_MODES)}",
    "diffusion_block_length": "a positive integer",
    "diffusion_sub_block_length": "a positive integer dividing the block length",
    "diffusion_threshold": "a number in (0, 1]",
    "diffusion_factor": "a number > 0",
    "diffusion_steps_per_block": "an integer in [1, block_length]",
    "diffusion_remasking": f"one of {', '.join(REMASKING)}",
    "diffusion_editing_threshold": "a number in [0, 1]",
    "diffusion_max_post_steps": "an integer >= 0",
}


def _as_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise DiffusionOptionError(key, f"must be an integer, got {value!r}")
    return value


def _as_float(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DiffusionOptionError(key, f"must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise DiffusionOptionError(key, f"must be finite, got {value!r}")
    return value


def _parse_rule(args: Mapping[str, Any], block_length: int, rule_keys=RULE_KEYS):
    """Return ``(rule, value)`` for the one rule in ``args``, or None."""
    given = [k for k in rule_keys if args.get(k) is not None]
    if len(given) > 1:
        raise DiffusionOptionError(
            given[1], f"at most one decoding rule per request; got {', '.join(given)}")
    if not given:
        return None
    key = given[0]
    if key == "diffusion_threshold":
        tau = _as_float(key, args[key])
        if not 0.0 < tau <= 1.0:
            raise DiffusionOptionError(key, f"must be in (0, 1], got {tau}")
        return "threshold", tau
    if key == "diffusion_factor":
        f = _as_float(key, args[key])
        if f <= 0.0:
            raise DiffusionOptionError(key, f"must be > 0, got {f}")
        return "factor", f
    return "fixed", _steps_per_block(args[key], block_length)


def _steps_per_block(value: Any, block_length: int) -> int:
    """A request's ``diffusion_steps_per_block`` (the fixed rule, or a step
    schedule): an integer in ``[1, block_length]``."""
    key = "diffusion_steps_per_block"
    steps = _as_int(key, value)
    if not 1 <= steps <= block_length:
        raise DiffusionOptionError(
            key, f"must be in [1, block_length={block_length}], got {steps}")
    return steps


def _default_steps_fit(steps: float | None, block_length: int) -> None:
    """The engine's default steps per block must fit a request's block."""
    if steps is not None and steps > block_length:
        raise DiffusionOptionError(
            "diffusion_block_length", f"{block_length} is shorter than the engine's default "
                                      f"diffusion_steps_per_block={int(steps)}")


def resolve_options(args: Mapping[str, Any] | None,
                    defaults: DiffusionOptions = DiffusionOptions()) -> DiffusionOptions:
    """Merge a request's ``extra_args`` over ``defaults``; raise on bad input.

    An option that is present must have a valid value: ``None`` (JSON
    ``null``) is an error like any other bad value, not "use the default".
    """
    args = args or {}
    unknown = sorted(k for k in args if k.startswith("diffusion_") and k not in OPTION_KEYS)
    if unknown:
        close = difflib.get_close_matches(unknown[0], OPTION_KEYS, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise DiffusionOptionError(
            unknown[0], f"unknown diffusion option; {hint}known: {', '.join(OPTION_KEYS)}")
    for key in OPTION_KEYS:
        if key in args and args[key] is None:
            raise DiffusionOptionError(key, f"must be {_EXPECTED[key]}, got null")

    cache = args.get("diffusion_cache")
    if cache is None:
        cache = defaults.cache
    elif cache not in CACHE_MODES:
        raise DiffusionOptionError(
            "diffusion_cache", f"must be one of {', '.join(CACHE_MODES)}, got {cache!r}")

    block_length = args.get("diffusion_block_length")
    if block_length is None:
        block_length = defaults.block_length
    else:
        block_length = _as_int("diffusion_block_length", block_length)
        if block_length < 1:
            raise DiffusionOptionError(
                "diffusion_block_length", f"must be a positive integer, got {block_length}")

    space = defaults.space
    schedule = space.step_schedule
    rule = _parse_rule(args, block_length,
                       tuple(k for k in RULE_KEYS if not (schedule and
                                                          k == "diffusion_steps_per_block")))
    if rule is None:
        rule = (defaults.rule, defaults.rule_value)
        if rule[0] == "fixed":
            _default_steps_fit(rule[1], block_length)

    sub_block_length = _sub_block_length(args, defaults, block_length)
    steps, remasking, editing, post = _schedule_and_editing(args, defaults, block_length)
    options = DiffusionOptions(cache=cache, block_length=block_length,
                               rule=rule[0], rule_value=float(rule[1]),
                               sub_block_length=sub_block_length, steps=steps,
                               remasking=remasking, editing_threshold=editing,
                               max_post_steps=post, space=space)
    space.check(options)
    return options


def _schedule_and_editing(args: Mapping[str, Any], defaults: DiffusionOptions,
                          block_length: int):
    """``(steps, remasking, editing_threshold, max_post_steps)`` of a
    block-diffusion loop with a step schedule (SDAR, LLaDA2.x); each option
    is refused by name where the family's loop has no such thing."""
    space = defaults.space
    steps_key, remasking_key = "diffusion_steps_per_block", "diffusion_remasking"
    editing_key, post_key = EDITING_KEYS

    if space.step_schedule and args.get(steps_key) is not None:
        steps = _steps_per_block(args[steps_key], block_length)
    else:
        steps = defaults.steps
        _default_steps_fit(steps, block_length)

    remasking = defaults.remasking
    if remasking_key in args:
        if not space.remasking:
            raise DiffusionOptionError(
                remasking_key, f"{space.family} has no remasking strategies (SDAR does)")
        remasking = args[remasking_key]
        if remasking not in space.remasking:
            raise DiffusionOptionError(
                remasking_key, f"must be one of {', '.join(space.remasking)}, "
                               f"got {remasking!r}")
    if remasking != DEFAULT_REMASKING and args.get("diffusion_threshold") is not None:
        raise DiffusionOptionError(
            "diffusion_threshold", f"only low_confidence_dynamic has a threshold; "
                                   f"{remasking} commits the step's quota")

    editing, post = defaults.editing_threshold, defaults.max_post_steps
    for key in EDITING_KEYS:
        if key in args and not space.editing:
            raise DiffusionOptionError(
                key, f"{space.family} has no token editing (LLaDA2.1's loop does)")
    if args.get(editing_key) is not None:
        editing = _as_float(editing_key, args[editing_key])
        if not 0.0 <= editing <= 1.0:
            raise DiffusionOptionError(editing_key, f"must be in [0, 1], got {editing}")
    if args.get(post_key) is not None:
        post = _as_int(post_key, args[post_key])
        if post < 0:
            raise DiffusionOptionError(post_key, f"must be an integer >= 0, got {post}")
        if editing is None:
            raise DiffusionOptionError(
                post_key, "post steps belong to the LLaDA2.1 loop: set "
                          "diffusion_editing_threshold too")
    if editing is not None and args.get(steps_key) is not None:
        raise DiffusionOptionError(
            steps_key, "the LLaDA2.1 loop (diffusion_editing_threshold) has no step "
                       "schedule")
    return steps, remasking, editing, post


def _sub_block_length(args: Mapping[str, Any], defaults: DiffusionOptions,
                      block_length: int) -> int:
    key = "diffusion_sub_block_length"
    if not defaults.space.sub_blocks:
        if key in args:
            raise DiffusionOptionError(
                key, f"{defaults.space.family} has no sub-blocks (block-diffusion models "
                     "such as Fast-dLLM v2 do)")
        return defaults.sub_block_length
    value = defaults.sub_block_length if args.get(key) is None else _as_int(key, args[key])
    if value < 1 or block_length % value:
        raise DiffusionOptionError(
            key, f"must be a positive integer dividing the block length ({block_length}), "
                 f"got {value}")
    return value


def engine_defaults(additional_config: Mapping[str, Any] | None,
                    space: OptionSpace = FULL_ATTENTION_OPTIONS) -> DiffusionOptions:
    """Engine-wide defaults from ``--additional-config`` (same option names),
    for a model family whose decoding loop allows ``space``.

    Every ``diffusion_*`` key is checked, so a typo stops start-up instead of
    leaving the built-in default in force; other keys belong to other plugins.
    """
    cfg = {k: v for k, v in (additional_config or {}).items() if k.startswith("diffusion_")}
    builtin = DiffusionOptions(block_length=space.block_length or DEFAULT_BLOCK_LENGTH,
                               rule_value=space.default_threshold, space=space)
    return resolve_options(cfg, builtin)
