"""The parity suite with torch.compile on (no ``enforce_eager``), as GPU
deployments run by default: vLLM's CPU build compiles the model with
Dynamo/Inductor, and the compiled forward must decode the same tokens as the
reference, in every cache mode and rule, with staggered arrivals.

The tests are test_parity.py's own, collected again here with an engine that
compiles (one in-process engine per module).
"""

import pytest

from engine_utils import make_llm
from test_parity import (  # noqa: F401  (collected again with the compiled engine)
    test_batch_parity,
    test_early_stop_on_end_token,
    test_generation_not_multiple_of_block,
    test_staggered_arrivals_mixed_options,
)


@pytest.fixture(scope="module")
def llm(llada_dir):
    llm = make_llm(llada_dir, enforce_eager=False)
    config = llm.llm_engine.vllm_config.compilation_config
    assert config.mode.name != "NONE", config.mode  # really compiled
    return llm
