"""Fast-dLLM v2's sampler (``top_p_predict``): temperature, the top-p nucleus,
one draw per row, and the renormalised probability as the confidence."""

import math

import torch

from vllm_dllm_plugin.decoding.confidence import dream_predict, top_p_predict

MASK = 4


def _rows(probs, n):
    logits = torch.log(torch.tensor(probs, dtype=torch.float32))
    logits = torch.cat([logits, torch.tensor([5.0])])   # id 4 = MASK, most likely
    return logits.expand(n, -1).clone()


def test_greedy_rows_are_dreams_prediction():
    logits = torch.randn(6, 50)
    temps = torch.tensor([0.0, 0.7, 0.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    uniforms = torch.rand(6, dtype=torch.float64)
    pred, conf = top_p_predict(logits, MASK, temps, uniforms, torch.full((6,), 0.9))
    want_pred, want_conf = dream_predict(logits, MASK)
    greedy = temps == 0
    assert torch.equal(pred[greedy], want_pred[greedy])
    assert torch.equal(conf[greedy], want_conf[greedy])


def test_draws_follow_the_renormalised_nucleus():
    n = 40000
    logits = _rows([0.5, 0.3, 0.15, 0.05], n)
    gen = torch.Generator().manual_seed(0)
    uniforms = torch.rand(n, generator=gen, dtype=torch.float64)
    temps = torch.ones(n, dtype=torch.float64)
    for top_p, kept in ((1.0, [0.5, 0.3, 0.15, 0.05]), (0.7, [0.5 / 0.8, 0.3 / 0.8]),
                        (0.5, [1.0])):
        pred, conf = top_p_predict(logits, MASK, temps, uniforms, torch.full((n,), top_p))
        assert MASK not in pred.tolist()
        freq = torch.bincount(pred, minlength=5)[:len(kept)].double() / n
        assert torch.allclose(freq, torch.tensor(kept, dtype=torch.float64), atol=0.01), (top_p, freq)
        assert int((torch.bincount(pred, minlength=5)[len(kept):]).sum()) == 0
        # the confidence is the drawn token's renormalised probability
        for token, p in enumerate(kept):
            assert torch.allclose(conf[pred == token], torch.tensor(p), atol=1e-6)


def test_temperature_sharpens():
    n = 20000
    logits = _rows([0.6, 0.4, 1e-9, 1e-9], n)
    uniforms = torch.rand(n, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    cold, _ = top_p_predict(logits, MASK, torch.full((n,), 0.25, dtype=torch.float64),
                            uniforms, torch.ones(n))
    share = float((cold == 0).double().mean())
    want = 0.6 ** 4 / (0.6 ** 4 + 0.4 ** 4)   # softmax(log p / T) at T = 1/4
    assert math.isclose(share, want, abs_tol=0.01)
