"""Test support shipped inside the plugin so tests, scripts and benchmarks
import it by name instead of editing ``sys.path``.

``reference``: an independent plain-PyTorch reference of each published
decoding loop; ``checkpoints``: random checkpoints in the real hub layouts;
``parity``: the engine-vs-reference comparison every parity test uses.
None of it imports vllm or the engine, so it can judge the engine.
"""
