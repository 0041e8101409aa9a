"""Shared fixtures: tiny checkpoints built on the fly, one engine per module.

Nothing is downloaded: checkpoints come from ``vllm_dllm_plugin.testing.checkpoints``.
"""

import os
import sys
from pathlib import Path

import pytest

# scripts/ holds local_server.py, load_test.py and train_embedded_model.py, which
# tests drive; they are command-line scripts, not a package.
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

# vLLM on a small CPU machine: engine in-process, 1 GiB of KV cache, offline.
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def llada_dir(tmp_path_factory) -> Path:
    from vllm_dllm_plugin.testing.checkpoints import write_llada_checkpoint

    return write_llada_checkpoint(tmp_path_factory.mktemp("llada-tiny"), seed=0)


@pytest.fixture(scope="session")
def llada_ref(llada_dir):
    """The plain-PyTorch reference model on the same checkpoint."""
    from vllm_dllm_plugin.testing.reference.llada import LLaDA

    return LLaDA.from_pretrained(llada_dir)


@pytest.fixture(scope="session")
def llada_eos(llada_dir) -> set[int]:
    from engine_utils import engine_eos_ids

    return engine_eos_ids(llada_dir)


@pytest.fixture(scope="session")
def dream_dir(tmp_path_factory) -> Path:
    from vllm_dllm_plugin.testing.checkpoints import write_dream_checkpoint

    return write_dream_checkpoint(tmp_path_factory.mktemp("dream-tiny"), seed=0)


@pytest.fixture(scope="session")
def dream_ref(dream_dir):
    from vllm_dllm_plugin.testing.reference.dream import Dream

    return Dream.from_pretrained(dream_dir)


@pytest.fixture(scope="session")
def dream_eos(dream_dir) -> set[int]:
    from engine_utils import engine_eos_ids

    return engine_eos_ids(dream_dir)


@pytest.fixture(scope="session")
def v2_dir(tmp_path_factory) -> Path:
    """Tiny Fast-dLLM v2 checkpoint, untied ``lm_head`` (the 7B layout)."""
    from vllm_dllm_plugin.testing.checkpoints import write_fast_dllm_v2_checkpoint

    return write_fast_dllm_v2_checkpoint(tmp_path_factory.mktemp("v2-tiny"), seed=0)


@pytest.fixture(scope="session")
def v2_tied_dir(tmp_path_factory) -> Path:
    """Tiny Fast-dLLM v2 checkpoint with tied embeddings (the 1.5B layout)."""
    from vllm_dllm_plugin.testing.checkpoints import write_fast_dllm_v2_checkpoint

    return write_fast_dllm_v2_checkpoint(tmp_path_factory.mktemp("v2-tied"), seed=1, tie_word_embeddings=True)


@pytest.fixture(scope="session")
def v2_ref(v2_dir):
    from vllm_dllm_plugin.testing.reference.fast_dllm_v2 import FastDLLMv2

    return FastDLLMv2.from_pretrained(v2_dir)


@pytest.fixture(scope="session")
def v2_eos(v2_dir) -> set[int]:
    from engine_utils import engine_eos_ids

    return engine_eos_ids(v2_dir)


@pytest.fixture(scope="session")
def v2_tied_ref(v2_tied_dir):
    from vllm_dllm_plugin.testing.reference.fast_dllm_v2 import FastDLLMv2

    return FastDLLMv2.from_pretrained(v2_tied_dir)


@pytest.fixture(scope="session")
def v2_tied_eos(v2_tied_dir) -> set[int]:
    from engine_utils import engine_eos_ids

    return engine_eos_ids(v2_tied_dir)


# -- SDAR and LLaDA2.x tiny checkpoints ---------------------------------------


@pytest.fixture(scope="session")
def sdar_dir(tmp_path_factory) -> Path:
    """Tiny SDAR checkpoint, untied ``lm_head`` (the 4B/8B layout)."""
    from vllm_dllm_plugin.testing.checkpoints import write_sdar_checkpoint

    return write_sdar_checkpoint(tmp_path_factory.mktemp("sdar-tiny"), seed=0)


@pytest.fixture(scope="session")
def sdar_tied_dir(tmp_path_factory) -> Path:
    """Tiny SDAR checkpoint, tied head, no block_size / mask_token_id keys."""
    from vllm_dllm_plugin.testing.checkpoints import write_sdar_checkpoint

    return write_sdar_checkpoint(tmp_path_factory.mktemp("sdar-tied"), seed=1,
                                 tie_word_embeddings=True, omit_block_keys=True)


@pytest.fixture(scope="session")
def sdar_ref(sdar_dir):
    from vllm_dllm_plugin.testing.reference.sdar import SDAR

    return SDAR.from_pretrained(sdar_dir)


@pytest.fixture(scope="session")
def sdar_tied_ref(sdar_tied_dir):
    from vllm_dllm_plugin.testing.reference.sdar import SDAR

    return SDAR.from_pretrained(sdar_tied_dir)


@pytest.fixture(scope="session")
def sdar_eos(sdar_dir) -> set[int]:
    from engine_utils import engine_eos_ids

    return engine_eos_ids(sdar_dir)


@pytest.fixture(scope="session")
def sdar_tied_eos(sdar_tied_dir) -> set[int]:
    from engine_utils import engine_eos_ids

    return engine_eos_ids(sdar_tied_dir)


@pytest.fixture(scope="session")
def llada2_dir(tmp_path_factory) -> Path:
    from vllm_dllm_plugin.testing.checkpoints import write_llada2_checkpoint

    return write_llada2_checkpoint(tmp_path_factory.mktemp("llada2-tiny"), seed=0)


@pytest.fixture(scope="session")
def llada2_ref(llada2_dir):
    from vllm_dllm_plugin.testing.reference.llada2 import LLaDA2Moe

    return LLaDA2Moe.from_pretrained(llada2_dir)


@pytest.fixture(scope="session")
def llada2_eos(llada2_dir) -> set[int]:
    from engine_utils import engine_eos_ids

    return engine_eos_ids(llada2_dir)


@pytest.fixture(scope="module")
def one_torch_thread():
    """For modules of plain-PyTorch reference runs (``pytestmark``): the tiny
    forwards gain nothing from intra-op threads, and on a small shared
    machine spinning OpenMP workers make them many times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
