"""Structured output (JSON schema, regex, choice): validity, accuracy, throughput.

Three measurements, one subcommand each, every figure measured in the run
that prints it (ratios too):

* ``validity``: ``--requests`` requests per kind (JSON schema, regex,
  choice) on the embedded model (``llada-arith``, LLaDA family) and on a tiny
  random-weight checkpoint of every other family (Dream, Fast-dLLM v2, SDAR,
  LLaDA2.x; ``vllm_dllm_plugin.testing.checkpoints``, the tests' shapes and
  seed).  Each output is checked with independent tools: ``json.loads`` +
  ``jsonschema`` for the schema, ``re.fullmatch`` for the regex, membership
  for the choice.  A response cut by ``max_tokens`` (``finish_reason
  "length"``) is invalid and counted as such.  Each kind rotates over a few
  grammars and each request over a few decoding settings of its family
  (thresholds, quota schedules, cache modes, one sampled setting), so runs of
  several tokens a step are checked against the grammar, not only one token
  a step.  Prompts: the held-out questions through each checkpoint's chat
  template.
* ``accuracy``: the embedded model on its held-out problems, greedy,
  unconstrained against the regex ``[0-9]+`` (every answer in
  ``heldout.jsonl`` matches it), exact match, in the engine's default mode
  (prefix cache, threshold 0.9).  Twice: with the checkpoint's end tokens as
  shipped (``<|endoftext|>``), and with ``<|eot_id|>`` (the chat template's
  end of turn, which the model writes right after its answer) added as a
  stop token.  Under a grammar a complete match may only be followed by an
  end token, so without the second the model cannot end its turn the way it
  learned to.
* ``throughput``: per family, a JSON schema (``THROUGHPUT_SCHEMA``) against
  unconstrained decoding of the same prompts with the same settings (the
  family's default rule, greedy), 1 request at a time (median of
  ``--repeats``) and ``--concurrency`` requests submitted together, after a
  warm-up pass over other prompts.  The embedded model also gets
  ``ANSWER_SCHEMA`` (its answers as a JSON integer: the grammar agrees with
  what it writes unconstrained), and ``<|eot_id|>`` as a stop token on every
  side.  Tokens/forward from the plugin's scheduler: output tokens over the
  requests' forwards (``diffusion_stats.finished``), and all committed tokens
  (end-token padding included) over request-forwards, what the
  ``vllm:diffusion_committed_tokens`` / ``vllm:diffusion_denoising_steps``
  counters report; output tokens/s as vLLM returns them.

    python benchmarks/bench_structured.py validity --requests 200
    python benchmarks/bench_structured.py validity --requests 200 --with-max-length
    python benchmarks/bench_structured.py validity --requests 50 --any-whitespace
    python benchmarks/bench_structured.py accuracy --problems 400
    python benchmarks/bench_structured.py throughput --concurrency 16 --repeats 5

Random-weight checkpoints write garbage, so every grammar here is bounded:
its longest match fits ``--max-tokens`` (schemas of enums, booleans, integers
with bounds and short patterned strings; regexes with bounded repetition).
Unbounded whitespace would not be: vLLM's JSON grammars allow any whitespace
between JSON tokens by default, and a random model writes whitespace until
``max_tokens``.  So the engines run with
``StructuredOutputsConfig(backend="xgrammar", disable_any_whitespace=True)``
(``--structured-outputs-config '{"backend": "xgrammar",
"disable_any_whitespace": true}'`` on the server; vLLM accepts the option
only with an explicit xgrammar or guidance backend).  ``--any-whitespace``
runs vLLM's default instead (and shows the JSON responses cut by
``max_tokens``).  ``--with-max-length`` adds a schema with a ``maxLength``
string, which xgrammar 0.2.8 compiles into a grammar that admits raw control
characters (``MAX_LENGTH_SCHEMA``).

Each engine runs in its own process (the script re-invokes itself with
``--worker``), one after the other, with ``--threads`` OpenMP threads (1).
Writes ``benchmarks/results/structured_<subcommand>.md`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from bench_fast_dllm_v2 import _cpu_name, _vllm_version, scheduler
from common import MODES, ROOT, chat_prompts, diffusion_params, embedded_model, heldout_problems
from common import markdown_table
from common import median, print_table, scheduler_counters, timed

# -- the grammars: bounded, so that even a random-weight model completes them ----
# Longest matches, in bytes (every token is at least one byte): the schemas
# 60, 58, 45 and 41 (compact separators), the regexes 10, 21, 10 and 40, the
# choices 19.  So with max_tokens 64 no response can be cut by the length
# limit: one that is, is a failure of the engine, not of the grammar's bound.

_NAME = {"type": "string", "pattern": "^[a-z]{1,8}$"}
SCHEMAS = [
    {"type": "object", "additionalProperties": False,
     "required": ["name", "age", "member", "color"],
     "properties": {"name": _NAME,
                    "age": {"type": "integer", "minimum": 0, "maximum": 120},
                    "member": {"type": "boolean"},
                    "color": {"enum": ["red", "green", "blue"]}}},
    {"type": "object", "additionalProperties": False,
     "required": ["item", "qty", "express", "tags"],
     "properties": {"item": {"enum": ["apple", "bread", "milk"]},
                    "qty": {"type": "integer", "minimum": 1, "maximum": 99},
                    "express": {"type": "boolean"},
                    "tags": {"type": "array", "maxItems": 2,
                             "items": {"enum": ["a", "b", "c"]}}}},
    {"type": "object", "additionalProperties": False,
     "required": ["answer", "kind"],
     "properties": {"answer": {"type": "integer", "minimum": 0, "maximum": 9999},
                    "kind": {"enum": ["add", "sort"]},
                    "note": {"type": "string", "pattern": "^[a-z ]{0,6}$"}}},
    # printable ASCII but '"' and '\\': a random model's tokens mostly pass,
    # so runs of several tokens are checked
    {"type": "object", "additionalProperties": False, "required": ["title", "done"],
     "properties": {"title": {"type": "string", "pattern": "^[ !#-\\[\\]-~]{0,16}$"},
                    "done": {"type": "boolean"}}},
]
# xgrammar 0.2.8 turns a string's maxLength (without pattern) into
# [^"\\\r\n]{0,n}: raw control characters U+0000-U+001F pass and escapes do
# not, so the output can be invalid JSON whatever the engine does.  Left out
# of the rotation; --with-max-length adds it to measure that.
MAX_LENGTH_SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["title", "done"],
    "properties": {"title": {"type": "string", "maxLength": 8}, "done": {"type": "boolean"}}}
REGEXES = [
    r"(19|20)[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])",
    r"[a-z]{1,8}@[a-z]{1,8}\.(com|org|net)",
    r"(\+|-)?[0-9]{1,6}(\.[0-9]{1,2})?",
    r"[ -~]{1,40}",     # printable ASCII: most of a random model's tokens pass
]
CHOICES = [
    ["yes", "no", "maybe"],
    ["red", "green", "blue", "yellow"],
    ["The quick brown fox", "A small model", "A small cat", "Hello!"],
]
KINDS = ("json", "regex", "choice")
ACCURACY_REGEX = "[0-9]+"
THROUGHPUT_SCHEMA = SCHEMAS[0]
# The embedded model's answers as JSON: what it writes unconstrained, so its
# parallel decoding is not fighting the grammar.
ANSWER_SCHEMA = {"type": "integer", "minimum": 0, "maximum": 99999}


def grammar(kind: str, i: int, schemas=SCHEMAS):
    """Request ``i``'s grammar of ``kind``: (the spec, for the record and the
    check, and vLLM's ``StructuredOutputsParams``)."""
    from vllm.sampling_params import StructuredOutputsParams

    if kind == "json":
        spec = schemas[i % len(schemas)]
        return spec, StructuredOutputsParams(json=spec)
    if kind == "regex":
        spec = REGEXES[i % len(REGEXES)]
        return spec, StructuredOutputsParams(regex=spec)
    spec = CHOICES[i % len(CHOICES)]
    return spec, StructuredOutputsParams(choice=spec)


def check(kind: str, spec, text: str, finish_reason: str) -> bool:
    """The output is complete (not cut by ``max_tokens``) and valid, by tools
    independent of the engine's grammar backend."""
    if finish_reason != "stop":
        return False
    if kind == "json":
        import jsonschema

        try:
            jsonschema.validate(json.loads(text), spec)
        except (ValueError, jsonschema.ValidationError):
            return False
        return True
    if kind == "regex":
        return re.fullmatch(spec, text) is not None
    return text in spec


# -- the checkpoints and each family's decoding settings ------------------------

FAMILIES = {
    "llada": dict(
        label="LLaDA (embedded llada-arith)", writer=None,
        default={"threshold": 0.9},
        settings=[{"threshold": 0.9}, {"cache": "dual", "threshold": 0.9}, {"factor": 1.0},
                  {"threshold": 0.5}, {"cache": "none", "steps_per_block": 8},
                  {"threshold": 0.7, "temperature": 1.0}]),
    "dream": dict(
        label="Dream (tiny)", writer="write_dream_checkpoint",
        default={"threshold": 0.9},
        settings=[{"threshold": 0.9}, {"cache": "dual", "threshold": 0.9}, {"factor": 1.0},
                  {"threshold": 0.5}, {"cache": "none", "steps_per_block": 8},
                  {"threshold": 0.7, "temperature": 1.0}]),
    "v2": dict(
        label="Fast-dLLM v2 (tiny)", writer="write_fast_dllm_v2_checkpoint",
        default={},
        settings=[{}, {"cache": "dual"}, {"threshold": 0.5},
                  {"threshold": 0.5, "sub_block_length": 32},
                  {"threshold": 0.7, "temperature": 1.0}]),
    "sdar": dict(
        label="SDAR (tiny)", writer="write_sdar_checkpoint",
        default={},
        settings=[{}, {"threshold": 0.5},
                  {"remasking": "low_confidence_static", "steps_per_block": 2},
                  {"remasking": "sequential", "steps_per_block": 1},
                  {"threshold": 0.5, "temperature": 1.0}]),
    "llada2": dict(
        label="LLaDA2.x (tiny, 2.0 loop)", writer="write_llada2_checkpoint",
        default={},
        settings=[{}, {"threshold": 0.5}, {"steps_per_block": 8}, {"steps_per_block": 2},
                  {"threshold": 0.5, "temperature": 1.0}]),
}


def checkpoint(family: str, model: str | None = None) -> Path:
    """``model`` if given, else the embedded model or the family's tiny
    checkpoint (the tests' shapes, seed 0), written once under ``.cache/models``."""
    if model:
        return Path(model)
    if family == "llada":
        return embedded_model()
    from vllm_dllm_plugin.testing import checkpoints

    path = ROOT / ".cache" / "models" / f"{family}-tiny-seed0"
    if not (path / "config.json").exists():
        getattr(checkpoints, FAMILIES[family]["writer"])(path, seed=0)
    return path


def sampling(setting: dict, max_tokens: int, seed: int, structured=None, **kwargs):
    from vllm import SamplingParams

    setting = dict(setting)
    temperature = setting.pop("temperature", 0.0)
    return SamplingParams(temperature=temperature, seed=seed if temperature else None,
                          max_tokens=max_tokens, structured_outputs=structured,
                          extra_args={f"diffusion_{k}": v for k, v in setting.items()},
                          **kwargs)


def make_llm(model: Path, max_num_seqs: int, any_whitespace: bool):
    from vllm import LLM

    config = ({} if any_whitespace
              else {"backend": "xgrammar", "disable_any_whitespace": True})
    return LLM(model=str(model), dtype="float32", max_model_len=1024, enforce_eager=True,
               max_num_seqs=max_num_seqs, seed=0, structured_outputs_config=config)


def questions(n: int) -> list[str]:
    """``n`` held-out questions (cycled), the prompts of every family."""
    problems = heldout_problems(embedded_model())
    return [problems[i % len(problems)]["question"] for i in range(n)]


def forwards_by_request(llm, outputs) -> list[int]:
    """Each finished request's forwards (the LLM API's ids, "3" -> "3-<hex>")."""
    finished = {k.rsplit("-", 1)[0]: v.forwards
                for k, v in scheduler(llm).diffusion_stats.finished.items()}
    return [finished[o.request_id] for o in outputs]


def stop_ids(llm, family: str) -> list[int] | None:
    """The embedded model's ``<|eot_id|>`` (its answers end there; not an end
    token of its generation_config: see ``accuracy``); None for the others."""
    if family != "llada":
        return None
    return [llm.get_tokenizer().convert_tokens_to_ids("<|eot_id|>")]


# -- workers: one engine each, results as JSON on the last stdout line ----------


def validity_worker(args) -> dict:
    """Every kind's requests interleaved in one submission (json, regex,
    choice, json, ...), so steps mix grammars of every kind and settings."""
    spec = FAMILIES[args.family]
    llm = make_llm(checkpoint(args.family, args.model), args.max_num_seqs, args.any_whitespace)
    prompts = chat_prompts(llm, questions(args.requests))
    settings = spec["settings"]
    requests = [(kind, i) for i in range(args.requests) for kind in KINDS]
    schemas = SCHEMAS + [MAX_LENGTH_SCHEMA] * args.with_max_length
    specs, params = [], []
    for kind, i in requests:
        g, structured = grammar(kind, i, schemas)
        specs.append(g)
        params.append(sampling(settings[i % len(settings)], args.max_tokens, seed=i,
                               structured=structured))
    seconds, outputs = timed(llm.generate, [prompts[i] for _, i in requests], params,
                             use_tqdm=False)
    forwards = forwards_by_request(llm, outputs)
    records = {kind: [] for kind in KINDS}
    for (kind, i), g, o, f in zip(requests, specs, outputs, forwards):
        out = o.outputs[0]
        records[kind].append(dict(spec=g, setting=settings[i % len(settings)], text=out.text,
                                  finish_reason=out.finish_reason, tokens=len(out.token_ids),
                                  token_ids=list(out.token_ids),
                                  forwards=f, valid=check(kind, g, out.text, out.finish_reason)))
    for kind, recs in records.items():
        bad = [r for r in recs if not r["valid"]]
        print(f"[{args.family}] {kind}: {len(recs) - len(bad)}/{len(recs)} valid"
              + (f"; first invalid: {bad[0]}" if bad else ""), file=sys.stderr, flush=True)
    print(f"[{args.family}] {len(requests)} requests in {seconds:.1f} s", file=sys.stderr,
          flush=True)
    return dict(model=str(checkpoint(args.family, args.model)), seconds=seconds,
                records=records)


def throughput_sides(family: str) -> dict:
    """Decoding sides of the throughput comparison: unconstrained, then each
    schema (name -> schema or None)."""
    sides = {"free": None, "schema (object)": THROUGHPUT_SCHEMA}
    if family == "llada":
        sides["schema (integer)"] = ANSWER_SCHEMA
    return sides


def throughput_worker(args) -> dict:
    """Per level, the same fresh prompts on every side; a first pass over
    other prompts warms every shape up (oneDNN builds its kernels per shape)."""
    from vllm.sampling_params import StructuredOutputsParams

    spec = FAMILIES[args.family]
    levels = [1, *[int(x) for x in args.concurrency.split(",") if x]]
    llm = make_llm(checkpoint(args.family, args.model), max(levels), args.any_whitespace)
    stop = stop_ids(llm, args.family)
    sides = throughput_sides(args.family)
    per_pass = args.repeats + sum(levels[1:])
    prompts = chat_prompts(llm, questions(2 * per_pass))

    def run_pass(prompts, repeats):
        results = {}
        for level in levels:
            count = repeats if level == 1 else level
            batch, prompts = prompts[:count], prompts[count:]
            groups = [[p] for p in batch] if level == 1 else [batch]
            for side, schema in sides.items():
                structured = StructuredOutputsParams(json=schema) if schema else None
                params = sampling(spec["default"], args.max_tokens, 0, structured=structured,
                                  stop_token_ids=stop)
                runs = []
                for group in groups:
                    forwards0, committed0 = scheduler_counters(llm)
                    seconds, outputs = timed(llm.generate, group, params, use_tqdm=False)
                    forwards1, committed1 = scheduler_counters(llm)
                    finish = [o.outputs[0].finish_reason for o in outputs]
                    runs.append(dict(
                        seconds=seconds, requests=len(group),
                        out_tokens=sum(len(o.outputs[0].token_ids) for o in outputs),
                        forwards=sum(forwards_by_request(llm, outputs)),
                        committed=committed1 - committed0,
                        request_forwards=forwards1 - forwards0,
                        valid=(sum(check("json", schema, o.outputs[0].text, f)
                                   for o, f in zip(outputs, finish)) if schema else None),
                        finish={r: finish.count(r) for r in set(finish)}))
                results.setdefault(side, {})[level] = runs
        return results

    run_pass(prompts[per_pass:], 1)                       # warm-up
    results = run_pass(prompts[:per_pass], args.repeats)
    for side, per in results.items():
        print(f"[{args.family}] {side}: " + ", ".join(
            f"{level}: {median([r['out_tokens'] / r['seconds'] for r in runs]):.1f} tok/s"
            for level, runs in per.items()), file=sys.stderr, flush=True)
    return dict(model=str(checkpoint(args.family, args.model)), results=results)


def spawn(args, family: str) -> dict:
    cmd = [sys.executable, __file__, args.command, "--worker", "--family", family,
           "--max-tokens", str(args.max_tokens), "--threads", str(args.threads)]
    if args.command == "validity":
        cmd += ["--requests", str(args.requests), "--max-num-seqs", str(args.max_num_seqs)]
        cmd += ["--with-max-length"] * args.with_max_length
    else:
        cmd += ["--concurrency", args.concurrency, "--repeats", str(args.repeats)]
    if args.any_whitespace:
        cmd.append("--any-whitespace")
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    if proc.returncode:
        print(f"[{family}] worker failed (exit {proc.returncode})", file=sys.stderr, flush=True)
        return dict(error=f"worker exited {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- the parent: tables ----------------------------------------------------------


def validity_tables(runs: dict) -> tuple[list[str], list[list]]:
    rows = []
    for family, run in runs.items():
        label = FAMILIES[family]["label"]
        if "records" not in run:
            rows.append([label, "-", "-", "-", run.get("error"), *["-"] * 6])
            continue
        for kind in KINDS:
            recs = run["records"][kind]
            valid = sum(x["valid"] for x in recs)
            finish = {}
            for x in recs:
                finish[x["finish_reason"]] = finish.get(x["finish_reason"], 0) + 1
            tokens, forwards = sum(x["tokens"] for x in recs), sum(x["forwards"] for x in recs)
            rows.append([label, kind, len(recs), valid, f"{100 * valid / len(recs):.1f}%",
                         ", ".join(f"{k} {v}" for k, v in sorted(finish.items())),
                         len({x["text"] for x in recs}),
                         f"{median([x['tokens'] for x in recs]):.0f}",
                         f"{tokens / forwards:.2f}",
                         sum(x["forwards"] < x["tokens"] for x in recs),
                         f"{run['seconds']:.0f}"])
    header = ["model", "kind", "requests", "valid", "valid %", "finish reasons",
              "distinct outputs", "median output tokens", "output tokens/forward",
              "requests with fewer forwards than tokens", "wall s (all kinds)"]
    return header, rows


def invalid_lines(runs: dict, limit: int = 10) -> list[str]:
    """The invalid outputs (up to ``limit`` per model), for the record."""
    lines = []
    for family, run in runs.items():
        bad = [(kind, r) for kind in KINDS for r in run.get("records", {}).get(kind, [])
               if not r["valid"]]
        if bad:
            lines += ["", f"Invalid outputs of {FAMILIES[family]['label']} ({len(bad)}, "
                          f"first {min(limit, len(bad))}):", ""]
            lines += [f"* {kind}, `{json.dumps(r['spec'])}`, setting {r['setting']}, finish "
                      f"{r['finish_reason']}: `{r['text']!r}`" for kind, r in bad[:limit]]
    return lines


def throughput_rows(family: str, run: dict, levels: list[int]) -> list[list]:
    label = FAMILIES[family]["label"]
    if "results" not in run:
        return [[label, "-", "-", run.get("error"), *["-"] * 6]]
    rows = []
    for level in levels:
        per = {}
        for side, by_level in run["results"].items():
            runs = by_level[str(level)]
            requests = sum(r["requests"] for r in runs)
            finish = {}
            for r in runs:
                for k, v in r["finish"].items():
                    finish[k] = finish.get(k, 0) + v
            per[side] = dict(
                tok_s=median([r["out_tokens"] / r["seconds"] for r in runs]),
                out_fwd=sum(r["out_tokens"] for r in runs) / sum(r["forwards"] for r in runs),
                committed_fwd=(sum(r["committed"] for r in runs)
                               / sum(r["request_forwards"] for r in runs)),
                out_req=sum(r["out_tokens"] for r in runs) / requests,
                fwd_req=sum(r["forwards"] for r in runs) / requests,
                finish=", ".join(f"{k} {v}" for k, v in sorted(finish.items())),
                valid=(None if runs[0]["valid"] is None else
                       f"{sum(r['valid'] for r in runs)}/{requests}"))
        free = per["free"]
        for side, v in per.items():
            ratio = ("" if side == "free" else
                     f"{v['out_fwd'] / free['out_fwd']:.2f}x / {v['tok_s'] / free['tok_s']:.2f}x")
            rows.append([label, level, side, f"{v['out_req']:.1f}", f"{v['fwd_req']:.1f}",
                         f"{v['out_fwd']:.2f}", f"{v['committed_fwd']:.2f}", f"{v['tok_s']:.1f}",
                         ratio, v["valid"] or "-", v["finish"]])
    return rows


THROUGHPUT_HEADER = ["family", "requests", "decoding", "output tokens/request",
                     "forwards/request", "output tokens/forward", "committed tokens/forward",
                     "output tok/s", "vs free: tokens/forward / tok/s", "schema-valid",
                     "finish reasons"]


# -- accuracy: in this process, one engine ---------------------------------------


def accuracy(args) -> list[str]:
    from vllm.sampling_params import StructuredOutputsParams

    problems = heldout_problems(embedded_model(), args.problems)
    assert all(re.fullmatch(ACCURACY_REGEX, p["answer"]) for p in problems)
    llm = make_llm(embedded_model(), args.max_num_seqs, args.any_whitespace)
    prompts = chat_prompts(llm, [p["question"] for p in problems])
    eot = llm.get_tokenizer().convert_tokens_to_ids("<|eot_id|>")
    mode = MODES[args.mode]
    # "\|": the labels go into markdown tables
    ends = {"end tokens as shipped (<\\|endoftext\\|>)": None,
            "<\\|eot_id\\|> added as a stop token": [eot]}
    regex = StructuredOutputsParams(regex=ACCURACY_REGEX)
    llm.generate(prompts[:4], diffusion_params(mode, args.gen_length, structured_outputs=regex),
                 use_tqdm=False)                                          # warm-up
    rows = []
    for end_name, stop in ends.items():
        acc = {}
        for side, structured in (("free", None), ("regex", regex)):
            params = diffusion_params(mode, args.gen_length, structured_outputs=structured,
                                      stop_token_ids=stop)
            outputs = llm.generate(prompts, params, use_tqdm=False)
            texts = [o.outputs[0].text.strip() for o in outputs]
            correct = sum(t == p["answer"] for t, p in zip(texts, problems))
            matching = sum(re.fullmatch(ACCURACY_REGEX, o.outputs[0].text) is not None
                           and o.outputs[0].finish_reason == "stop" for o in outputs)
            forwards = sum(forwards_by_request(llm, outputs))
            tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
            acc[side] = 100 * correct / len(problems)
            print(f"{end_name}, {side}: {correct}/{len(problems)} correct", file=sys.stderr,
                  flush=True)
            rows.append([end_name, side, f"{correct}/{len(problems)}", f"{acc[side]:.2f}%",
                         f"{matching}/{len(problems)}", f"{tokens / len(problems):.2f}",
                         f"{forwards / len(problems):.2f}", f"{tokens / forwards:.2f}"])
        diff = acc["regex"] - acc["free"]
        rows.append([end_name, "regex - free", "", f"{diff:+.2f} points",
                     "within 2 points" if abs(diff) <= 2 else "NOT within 2 points", "", "", ""])
    header = ["end tokens", "decoding", "correct", "accuracy", "complete output matches the regex",
              "output tokens/request", "forwards/request", "output tokens/forward"]
    lines = [f"{len(problems)} held-out problems, float32, greedy, chat template, generation "
             f"length {args.gen_length}, block length 32, mode \"{args.mode}\", up to "
             f"{args.max_num_seqs} requests per step; regex `{ACCURACY_REGEX}`.", ""]
    print_table(header, rows)
    return lines + markdown_table(header, rows)


# -- main -------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    common_args = argparse.ArgumentParser(add_help=False)
    common_args.add_argument("--any-whitespace", action="store_true",
                             help="vLLM's default structured-outputs config (any whitespace "
                                  "between JSON tokens) instead of xgrammar without it")
    common_args.add_argument("--threads", type=int, default=1,
                             help="OpenMP threads per engine (OMP_NUM_THREADS), 1 by default "
                                  "as in bench_fast_dllm_v2.py: on a 2-core machine more "
                                  "threads spin against the engine's Python thread and made "
                                  "steps 10-30x slower in our runs")
    common_args.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    common_args.add_argument("--family", help=argparse.SUPPRESS)
    common_args.add_argument("--model", help=argparse.SUPPRESS)
    common_args.add_argument("--out", type=Path, default=None,
                             help="default: benchmarks/results/structured_<subcommand>.md")
    v = sub.add_parser("validity", parents=[common_args])
    v.add_argument("--requests", type=int, default=200, help="per kind and model")
    v.add_argument("--max-tokens", type=int, default=64,
                   help="every grammar's longest match is at most 60 bytes (+ an end token)")
    v.add_argument("--with-max-length", action="store_true",
                   help="add MAX_LENGTH_SCHEMA (xgrammar's maxLength strings) to the rotation")
    v.add_argument("--max-num-seqs", type=int, default=64)
    v.add_argument("--families", default=",".join(FAMILIES))
    a = sub.add_parser("accuracy", parents=[common_args])
    a.add_argument("--problems", type=int, default=400)
    a.add_argument("--gen-length", type=int, default=256)
    a.add_argument("--max-num-seqs", type=int, default=64)
    a.add_argument("--mode", choices=list(MODES), default="prefix, threshold 0.9")
    t = sub.add_parser("throughput", parents=[common_args])
    t.add_argument("--max-tokens", type=int, default=96)
    t.add_argument("--concurrency", default="16")
    t.add_argument("--repeats", type=int, default=3, help="batch-1 requests (median)")
    t.add_argument("--families", default=",".join(FAMILIES))
    args = ap.parse_args()
    # Before torch is imported here or in a worker (they inherit it).
    os.environ["OMP_NUM_THREADS"] = str(args.threads)

    if args.worker:
        worker = validity_worker if args.command == "validity" else throughput_worker
        print(json.dumps(worker(args)))
        return

    start, load_start = time.perf_counter(), os.getloadavg()
    command_line = "python benchmarks/bench_structured.py " + " ".join(sys.argv[1:])
    if args.command == "accuracy":
        lines = accuracy(args)
    else:
        families = [f for f in args.families.split(",") if f]
        runs = {family: spawn(args, family) for family in families}
        if args.command == "validity":
            header, rows = validity_tables(runs)
            lines = [f"{args.requests} requests per kind and model, max_tokens "
                     f"{args.max_tokens}; per model all {len(KINDS) * args.requests} requests "
                     f"submitted together, kinds interleaved (up to {args.max_num_seqs} per "
                     f"step).", ""]
        else:
            levels = [1, *[int(x) for x in args.concurrency.split(",") if x]]
            header = THROUGHPUT_HEADER
            rows = [row for family in families
                    for row in throughput_rows(family, runs[family], levels)]
            lines = [f"max_tokens {args.max_tokens}; 1 request: median of {args.repeats} "
                     f"requests one at a time; n requests: submitted together, once.", ""]
        print_table(header, rows)
        lines += markdown_table(header, rows)
        if args.command == "validity":
            lines += invalid_lines(runs)
    elapsed, load_end = time.perf_counter() - start, os.getloadavg()
    whitespace = ("vLLM's default structured-outputs config (any whitespace)"
                  if args.any_whitespace else
                  "xgrammar, disable_any_whitespace=True")
    lines = [f"`{command_line}`", "", *lines, "",
             f"Grammar backend: {whitespace}. Machine: {os.cpu_count()} CPUs ({_cpu_name()}), "
             f"vLLM {_vllm_version()}, float32, enforce_eager, {args.threads} OpenMP "
             f"thread(s) per engine; load average "
             f"{load_start[0]:.2f} at the start, {load_end[0]:.2f} at the end; whole run "
             f"{elapsed:.0f} s; {time.strftime('%Y-%m-%d')}.", ""]
    print("\n".join(lines))
    out = args.out or ROOT / "benchmarks" / "results" / f"structured_{args.command}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
