"""Every run-time change the plugin makes to vLLM, one module per patched place.

vLLM offers no hook for these.  Each module says why the change is needed,
what it changes, and when it can go; ``patches/`` at the repository root
holds the reviewable record.  Importing this package changes nothing: each
module applies its change through an explicit, idempotent function.
"""

# The modules that mean "this process runs vLLM's OpenAI server".
_SERVER_MODULES = ("vllm.entrypoints.launchers.app", "vllm.entrypoints.openai.api_server")


def apply_openai_contract() -> list[str] | None:
    """The OpenAI server's request contract for a diffusion model, in an API
    server process (None elsewhere): returns what this vLLM lacks."""
    import sys

    if not any(name in sys.modules for name in _SERVER_MODULES):
        return None
    from vllm_dllm_plugin.patch import (
        openai_errors,
        openai_handlers,
        openai_max_tokens,
        openai_protocol,
    )

    return [*openai_handlers.apply(), *openai_protocol.apply(), *openai_max_tokens.apply(),
            *openai_errors.apply()]
