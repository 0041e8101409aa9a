"""A ``null`` or ill-typed ``diffusion_*`` value gets the option's own 400.

Why: pydantic rejects ``vllm_xargs`` values that are not strings, numbers
or lists (``null``, objects) with one error per union branch, which names
neither the option nor what it takes.

What: wraps ``vllm.entrypoints.serve.exception_handling.register.
validation_exception_handler``: when an error sits under
``vllm_xargs.diffusion_*``, the response is the option's message
(``serving.validation.diffusion_option_problem``), in vLLM's error format;
every other error goes to vLLM's handler.  API process only.

When it can go: once ``vllm_xargs`` values are validated by the model's
own hook instead of pydantic's union.
"""

from __future__ import annotations

import sys

from vllm_dllm_plugin.patch._wrapping import is_wrapped, resolve, wrapped
from vllm_dllm_plugin.serving.validation import DiffusionRequestError, diffusion_option_problem

MODULE = "vllm.entrypoints.serve.exception_handling.register"


def apply() -> list[str]:
    original = resolve(MODULE, "validation_exception_handler")
    if original is None:
        return ["register.validation_exception_handler"]
    if not is_wrapped(original):
        sys.modules[MODULE].validation_exception_handler = wrapped(
            original, _option_errors_first(original))
    return []


def _option_errors_first(original):
    async def handler(req, exc):
        problem = diffusion_option_problem(exc.errors())
        if problem is None:
            return await original(req, exc)
        from starlette.responses import JSONResponse
        from vllm.entrypoints.serve.exception_handling.error_response import (
            create_error_response,
        )

        error = create_error_response(DiffusionRequestError.from_option_error(problem))
        return JSONResponse(error.model_dump(), status_code=error.error.code)

    return handler
