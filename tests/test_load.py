"""The load test against a live server: hundreds of concurrent mixed requests."""

from load_test import main


def test_load_no_failures_no_mismatches_memory_back_to_idle(llada_dir):
    figures = main(["--model-dir", str(llada_dir), "--model", "tiny-llada",
                    "--requests", "300", "--concurrency", "64", "--timeout", "300"])
    assert figures["failures"] == 0, figures["first_failure"]
    assert figures["mismatches"] == 0
    assert figures["completed"] + figures["aborted"] == figures["requests"]
    assert figures["aborted"] > 0 and figures["completed"] > 0
    assert figures["kv_cache_usage_after"] == 0.0
