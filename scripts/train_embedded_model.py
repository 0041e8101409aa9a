#!/usr/bin/env python3
"""Train the embedded default model: a small LLaDA that does arithmetic and sorting.

The model is a LLaDA-architecture masked-diffusion transformer (bidirectional
attention, RMSNorm, NeoX rotary, SwiGLU, untied head) trained from scratch with
LLaDA's supervised objective on a synthetic task whose answers can be checked
exactly and whose answer tokens depend on each other:

* ``add``: ``47+86=`` -> ``133`` (operands of 1 or 2 digits: the carry ties
  the answer's digits together);
* ``sort``: ``sort 52817`` -> ``12578`` (3 to 6 digits, repeats allowed).

Each question is asked in two formats: through LLaDA-Instruct's chat template
(answer, ``<|eot_id|>``, then ``<|endoftext|>`` padding, as LLaDA-Instruct's
SFT data), and as a bare completion prompt (answer then ``<|endoftext|>``
padding).  The canvas after the prompt has a random length up to 512, so the
model also answers inside long generation lengths.

The objective (LLaDA SFT): draw t ~ U(0, 1) per sequence, mask each canvas
token with probability t, never the prompt, and minimise the cross-entropy on
the masked tokens weighted by 1/t.  Training stops when greedy accuracy on a
held-out set, decoded one token per step (the Fast-dLLM baseline), reaches
``--target-accuracy``, or when ``--minutes`` run out.

Usage::

    python scripts/train_embedded_model.py OUT_DIR [--minutes 40] [--seed 0]
    python scripts/train_embedded_model.py OUT_DIR --resume CHECKPOINT ...   # go on training

The shipped weights (``vllm_dllm_plugin/assets/llada-arith``) are two runs on
the 2-core CPU machine (``training.json`` records both)::

    python scripts/train_embedded_model.py stage1 --minutes 60 --heldout 400
    python scripts/train_embedded_model.py stage2 --resume stage1 --minutes 15 --lr 4e-4 --seed 1 --heldout 400

The output is a checkpoint in LLaDA's hub layout (the files
``vllm_dllm_plugin.testing.checkpoints`` writes), plus ``heldout.jsonl``: the held-out
problems, which no training example repeats.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from vllm_dllm_plugin.testing.checkpoints import (
    BOS,
    EOS,
    EOT,
    MASK,
    build_llada_tokenizer,
    write_llada_config,
    write_llada_generation_config,
    write_tokenizer_files,
)

SIZES = dict(d_model=128, n_layers=4, n_heads=4, n_kv_heads=4, mlp_hidden_size=384, vocab_size=288)
MAX_SEQUENCE_LENGTH = 1024
ROPE_THETA = 500000.0  # config.json's value; the training forward must use the same
RMS_EPS = 1e-5
# Canvas lengths during training, with their probabilities: mostly one block,
# some long canvases so that answers come out the same at generation length 512.
CANVAS_LENGTHS = (16, 32, 64, 128, 256, 512)
CANVAS_WEIGHTS = (0.45, 0.3, 0.08, 0.07, 0.05, 0.05)
TOKENS_PER_BATCH = 8192
EVAL_BLOCK = 32


# --- the task ----------------------------------------------------------------------------


def make_problem(rng: random.Random) -> tuple[str, str]:
    """One (question, answer) pair, ``add`` or ``sort`` with equal odds."""
    if rng.random() < 0.5:
        a, b = (rng.randint(0, 10 ** rng.randint(1, 2) - 1) for _ in range(2))
        return f"{a}+{b}=", str(a + b)
    digits = [str(rng.randint(0, 9)) for _ in range(rng.randint(3, 6))]
    return "sort " + "".join(digits), "".join(sorted(digits))


def heldout_problems(n: int) -> list[tuple[str, str]]:
    """``n`` distinct problems from their own fixed random stream (the same
    whatever the training seed, so runs and resumed runs share it)."""
    rng, seen, out = random.Random("heldout-0"), set(), []
    while len(out) < n:
        q, a = make_problem(rng)
        if q not in seen:
            seen.add(q)
            out.append((q, a))
    return out


def chat_prompt(question: str) -> str:
    """LLaDA-Instruct's chat template rendered for one user turn (what vLLM's
    chat endpoint sends for ``[{"role": "user", "content": question}]``)."""
    return f"{BOS}<|start_header_id|>user<|end_header_id|>\n\n{question}{EOT}<|start_header_id|>assistant<|end_header_id|>\n\n"


class Encoder:
    """Token ids of prompts and answers, in the two formats."""

    def __init__(self, tok, ids: dict[str, int]):
        self.tok, self.ids = tok, ids
        self.eos, self.eot, self.mask = ids[EOS], ids[EOT], ids[MASK]

    def ids_of(self, text: str) -> list[int]:
        return self.tok.encode(text).ids

    def example(self, question: str, answer: str, chat: bool, canvas: int) -> tuple[list[int], list[int]]:
        """(prompt ids, canvas ids): the answer, ``<|eot_id|>`` in chat
        format, then end-of-text padding to ``canvas`` tokens."""
        prompt = self.ids_of(chat_prompt(question) if chat else question)
        target = self.ids_of(answer) + ([self.eot] if chat else [])
        target = target + [self.eos] * (canvas - len(target))
        return prompt, target[:canvas]


# --- the model (LLaDA's layout; parameter names are the checkpoint's) ----------------------


class RMSNorm(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + RMS_EPS)).type_as(x) * self.weight


class Block(nn.Module):
    def __init__(self, d: int, heads: int, hidden: int):
        super().__init__()
        self.heads = heads
        self.attn_norm, self.ff_norm = RMSNorm(d), RMSNorm(d)
        self.q_proj, self.k_proj, self.v_proj, self.attn_out = (nn.Linear(d, d, bias=False) for _ in range(4))
        self.ff_proj, self.up_proj = nn.Linear(d, hidden, bias=False), nn.Linear(d, hidden, bias=False)
        self.ff_out = nn.Linear(hidden, d, bias=False)

    def forward(self, x, cos, sin, key_mask):
        b, n, d = x.shape
        h = self.attn_norm(x)
        q, k, v = (p(h).view(b, n, self.heads, -1).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)
        x = x + self.attn_out(att.transpose(1, 2).reshape(b, n, d))
        h = self.ff_norm(x)
        return x + self.ff_out(F.silu(self.ff_proj(h)) * self.up_proj(h))


def rotate(x, cos, sin):
    """NeoX rotary: the two halves of each head form the (re, im) pairs."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


class Transformer(nn.Module):
    def __init__(self, d_model, n_layers, n_heads, mlp_hidden_size, vocab_size, **_):
        super().__init__()
        self.wte = nn.Embedding(vocab_size, d_model)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, mlp_hidden_size) for _ in range(n_layers))
        self.ln_f = RMSNorm(d_model)
        self.ff_out = nn.Linear(d_model, vocab_size, bias=False)
        head_dim = d_model // n_heads
        inv = 1.0 / ROPE_THETA ** (torch.arange(0, head_dim, 2).float() / head_dim)
        angles = torch.outer(torch.arange(MAX_SEQUENCE_LENGTH).float(), inv)
        angles = torch.cat((angles, angles), dim=-1)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, ids, valid):
        """Logits for ``ids`` [b, n]; ``valid`` [b, n] marks real (not padding) tokens."""
        n = ids.shape[1]
        key_mask = valid[:, None, None, :]  # every token sees every real token
        x = self.wte(ids)
        for block in self.blocks:
            x = block(x, self.cos[:n], self.sin[:n], key_mask)
        return self.ff_out(self.ln_f(x))


class LLaDAModelLM(nn.Module):
    """Wrapper whose state_dict keys are LLaDA's: ``model.transformer.*``."""

    def __init__(self):
        super().__init__()
        self.model = nn.Module()
        self.model.transformer = Transformer(**SIZES)
        for name, p in self.named_parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, ids, valid):
        return self.model.transformer(ids, valid)


# --- batches, loss, evaluation --------------------------------------------------------------


@dataclass
class Batch:
    ids: torch.Tensor  # [b, n] with masks applied
    targets: torch.Tensor  # [b, n], -100 where no loss
    weights: torch.Tensor  # [b, n] 1/t on masked canvas tokens
    valid: torch.Tensor  # [b, n] bool


def make_batch(enc: Encoder, rng: random.Random, exclude: set[str], gen: torch.Generator) -> Batch:
    canvas = rng.choices(CANVAS_LENGTHS, CANVAS_WEIGHTS)[0]
    size = max(4, TOKENS_PER_BATCH // (canvas + 28))
    rows = []
    while len(rows) < size:
        q, a = make_problem(rng)
        if q in exclude:
            continue
        rows.append(enc.example(q, a, chat=rng.random() < 0.5, canvas=canvas))
    n = max(len(p) + len(c) for p, c in rows)
    ids = torch.full((size, n), enc.eos)
    is_canvas = torch.zeros(size, n, dtype=torch.bool)
    valid = torch.zeros(size, n, dtype=torch.bool)
    for i, (p, c) in enumerate(rows):
        ids[i, : len(p) + len(c)] = torch.tensor(p + c)
        is_canvas[i, len(p) : len(p) + len(c)] = True
        valid[i, : len(p) + len(c)] = True
    # t ~ U(0, 1) per sequence, stratified over the batch (each of ``size``
    # equal slices of (0, 1) gets one draw): same law, less gradient noise.
    t = ((torch.arange(size) + torch.rand(size, generator=gen)) / size)[torch.randperm(size, generator=gen)]
    t = t.clamp_min(1e-3)[:, None]
    masked = is_canvas & (torch.rand(size, n, generator=gen) < t)
    targets = torch.where(masked, ids, torch.full_like(ids, -100))
    weights = masked.float() / t
    return Batch(ids.masked_fill(masked, enc.mask), targets, weights, valid)


def loss_of(model, batch: Batch) -> torch.Tensor:
    logits = model(batch.ids, batch.valid)
    ce = F.cross_entropy(logits.flatten(0, 1), batch.targets.flatten(), ignore_index=-100, reduction="none")
    return (ce * batch.weights.flatten()).sum() / batch.valid.sum().clamp_min(1) * 4


@torch.no_grad()
def greedy_accuracy(model, enc: Encoder, problems, *, chat: bool, canvas: int = EVAL_BLOCK) -> float:
    """Accuracy of one-token-per-step low-confidence decoding (the baseline)
    on a canvas of one block: every step commits the most confident masked
    position.  Batched over problems; prompts are right-aligned into one
    tensor with padding keys masked out."""
    model.eval()
    prompts = [enc.ids_of(chat_prompt(q) if chat else q) for q, _ in problems]
    n = max(map(len, prompts)) + canvas
    b = len(problems)
    ids = torch.full((b, n), enc.eos)
    valid = torch.zeros(b, n, dtype=torch.bool)
    starts = []
    for i, p in enumerate(prompts):
        ids[i, : len(p)] = torch.tensor(p)
        ids[i, len(p) : len(p) + canvas] = enc.mask
        valid[i, : len(p) + canvas] = True
        starts.append(len(p))
    for _ in range(canvas):
        logits = model(ids, valid).float()
        conf, pred = logits.softmax(-1).max(-1)
        is_masked = ids == enc.mask
        conf = conf.masked_fill(~is_masked, -1.0)
        pick = conf.argmax(-1)
        rows = torch.arange(b)
        ids[rows, pick] = torch.where(is_masked[rows, pick], pred[rows, pick], ids[rows, pick])
    correct = 0
    for i, (_, answer) in enumerate(problems):
        out = ids[i, starts[i] : starts[i] + canvas].tolist()
        stop = [j for j, t in enumerate(out) if t in (enc.eos, enc.eot)]
        text = enc.tok.decode(out[: stop[0]] if stop else out)
        correct += text == answer
    model.train()
    return correct / b


# --- main -----------------------------------------------------------------------------------


def train(out_dir: Path, *, minutes: float, seed: int, target: float, lr: float, heldout_n: int,
          resume: Path | None = None) -> None:
    torch.manual_seed(seed)
    rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)
    tok, ids = build_llada_tokenizer(SIZES["vocab_size"], merges=False)
    enc = Encoder(tok, ids)
    heldout = heldout_problems(heldout_n)
    exclude = {q for q, _ in heldout}
    probe = heldout[:128]

    model = LLaDAModelLM()
    if resume is not None:  # go on from a checkpoint this script wrote
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(resume / "model.safetensors")))
    print(f"parameters: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M", flush=True)
    decay = [p for p in model.parameters() if p.dim() == 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.98))
    deadline = time.monotonic() + minutes * 60
    t0, step, ema = time.monotonic(), 0, None
    warmup = 200
    while time.monotonic() < deadline:
        frac = (time.monotonic() - t0) / (deadline - t0)
        scale = min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))
        for g in opt.param_groups:
            g["lr"] = lr * scale
        loss = loss_of(model, make_batch(enc, rng, exclude, gen))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        if step % 250 == 0:
            acc = [greedy_accuracy(model, enc, probe, chat=c) for c in (True, False)]
            tasks = {name: greedy_accuracy(model, enc, [p for p in probe if p[0].startswith("sort") == (name == "sort")], chat=True)
                     for name in ("add", "sort")}
            print(f"step {step} {time.monotonic() - t0:.0f}s loss {ema:.4f} lr {lr * scale:.2e} "
                  f"probe accuracy chat {acc[0]:.3f} plain {acc[1]:.3f} (chat: add {tasks['add']:.3f}, "
                  f"sort {tasks['sort']:.3f})", flush=True)
            if min(acc) >= target:
                break

    final = {c: greedy_accuracy(model, enc, heldout, chat=c == "chat") for c in ("chat", "plain")}
    print(f"held-out ({len(heldout)} problems) greedy accuracy, 1 token/step, canvas {EVAL_BLOCK}: {final}")
    stages = []
    if resume is not None and (resume / "training.json").exists():
        stages = json.loads((resume / "training.json").read_text()).get("stages", [])
    stages.append(dict(steps=step, seconds=round(time.monotonic() - t0), seed=seed, lr=lr,
                       resumed=resume is not None, heldout_accuracy=final))
    save(out_dir, model, tok, ids, heldout, meta=dict(stages=stages))


def save(out_dir: Path, model, tok, ids, heldout, *, meta: dict) -> None:
    """The checkpoint in LLaDA's hub layout, the held-out set and a training record."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_tokenizer_files(out_dir, tok, ids)
    write_llada_config(out_dir, **SIZES, max_sequence_length=MAX_SEQUENCE_LENGTH, dtype="float32", ids=ids)
    write_llada_generation_config(out_dir, ids)
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    with open(out_dir / "heldout.jsonl", "w") as f:
        for q, a in heldout:
            f.write(json.dumps({"question": q, "answer": a}) + "\n")
    (out_dir / "training.json").write_text(json.dumps(meta, indent=2) + "\n")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--minutes", type=float, default=40.0, help="training time budget")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--target-accuracy", type=float, default=0.98, help="stop early at this probe accuracy")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--heldout", type=int, default=500, help="held-out problems")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--resume", type=Path, default=None, help="start from this checkpoint's weights")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    train(args.out_dir, minutes=args.minutes, seed=args.seed, target=args.target_accuracy, lr=args.lr,
          heldout_n=args.heldout, resume=args.resume)


if __name__ == "__main__":
    main()
