"""Plain-PyTorch Dream, loaded from a checkpoint directory in the hub format.

Dream-v0-7B is the Qwen2.5-7B decoder run without a causal mask (the hub's
Dream-org/Dream-v0-Instruct-7B modeling code; Fast-dLLM, arXiv 2505.22618,
decodes it with its block cache): the layer math is ``qwen2.Qwen2``
(q/k/v biases, GQA, NeoX rotary in the model dtype, RMSNorm in float32, SwiGLU,
untied ``lm_head`` unless ``tie_word_embeddings``), with fully bidirectional
attention (no mask at all). Its config adds ``mask_token_id``.

Logits come out in the model dtype, one row per input position, *unshifted*:
the Dream decoding family (``fast_dllm.DREAM``) applies the shift by one.

Decoding (``fast_dllm.generate`` with this model's family ``"dream"``):

* the prediction for block position ``p`` comes from output row ``p - 1`` of
  the same forward (row 0 keeps its own); in a cached step the rows start at
  ``s``, so position ``s + j`` uses step row ``j - 1`` and position ``s``
  (committed by the refresh) keeps row 0;
* ``probs = softmax(logits)`` in the model dtype, ``conf, pred = probs.max(-1)``
  (temperature > 0: ``pred`` from Gumbel noise as for LLaDA, ``conf`` still the
  un-noised probability at ``pred``);
* the refresh (first forward of a block) commits only position ``s``,
  unconditionally; the rule runs from the next step;
* fixed schedule: with ``m`` masks at the block start the refresh leaves
  ``m' = m - 1``; the following steps ``i = 0, 1, ...`` use
  ``k = min(steps_per_block, m')`` steps and commit
  ``q_i = m' // k + (1 if i < m' % k else 0)`` tokens (nothing after the
  refresh when ``m' == 0``);
* threshold / factor bars are compared with the model-dtype confidence as
  tensor vs. Python float, i.e. effectively rounded to the model dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

from .qwen2 import EMBED, HEAD, LAYER_WEIGHTS, NORM, Qwen2, Qwen2Config, qwen2_fields

__all__ = ["EMBED", "HEAD", "LAYER_WEIGHTS", "NORM", "Dream", "DreamConfig"]

DEFAULT_MASK_ID = 151666  # <|mask|> of Dream-v0-Instruct-7B


@dataclass(frozen=True)
class DreamConfig(Qwen2Config):
    mask_token_id: int = DEFAULT_MASK_ID

    @classmethod
    def from_dict(cls, cfg: dict) -> "DreamConfig":
        return cls(**qwen2_fields(cfg), mask_token_id=cfg.get("mask_token_id", DEFAULT_MASK_ID))


class Dream(Qwen2):
    """Dream with weights held as plain tensors: ``qwen2.Qwen2`` with the
    ``dream`` decoding family."""

    family = "dream"
    config_class = DreamConfig
