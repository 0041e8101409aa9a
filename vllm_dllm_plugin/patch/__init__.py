"""Every run-time change the plugin makes to vLLM, one module per patched place.

vLLM offers no hook for these.  Each module says why the change is needed,
what it changes, and when it can go; ``patches/`` at the repository root
holds the reviewable record.  Importing this package changes nothing: each
module applies its change through an explicit, idempotent function.
"""
