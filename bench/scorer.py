"""koedu's scorer alone: TextScorer (tokenize, pack, score) on the benchmark documents.

    python -m bench.scorer [--documents 768] [--large_documents 96] [--label after]
    python -m bench.scorer --sizes base --config row_lengths=(128,256,512) --xla_flags=... --label try

Each size runs in its own process: load the checkpoint, compile every shape the scorer may run
(no persistent cache, so compile seconds are real), then score all documents in one call, as
the pipeline scores a chunk. Figures are for that call, after warm-up. `--config` overrides
RunnerConfig fields (or dtype=, attention=), `--xla_flags` sets XLA_FLAGS for the child; `--label` names the result
(results/scorer-LABEL.json and the doc section "scorer LABEL").
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import time

from bench import common
from bench.reference import figures, limits


def build(model_dir: str, overrides: dict):
  """A TextScorer as the pipeline's workers build it, with `dtype`, `attention` or any
  RunnerConfig field overridden."""
  from model import hub
  from model.runner import RunnerConfig
  from model.text_scorer import enable_compilation_cache, load_text_scorer
  enable_compilation_cache("none")
  precision, attention = overrides.pop("dtype", "auto"), overrides.pop("attention", "auto")
  model_dir = hub.fetch(hub.describe(model_dir))
  return load_text_scorer(model_dir, RunnerConfig(max_length=common.MAX_LENGTH, **overrides),
                          precision=precision, attention=attention)


def measure(size: str, n: int, overrides: dict) -> dict:
  texts = common.documents(n)
  model_dir = common.checkpoint(size)
  start = time.perf_counter()
  text_scorer = build(model_dir, dict(overrides))
  load_seconds = time.perf_counter() - start
  scorer = text_scorer.runner
  start = time.perf_counter()
  scorer.warmup()
  warmup_seconds = time.perf_counter() - start
  compile_seconds = {f"{r}x{l}": s for (r, l), s in scorer.stats.compile_seconds.items()}

  start = time.perf_counter()
  tokenized = text_scorer.tokenizer(texts)
  tokenize_seconds = time.perf_counter() - start
  scorer.stats = type(scorer.stats)()
  with common.Interference().measure() as busy:
    start = time.perf_counter()
    scores = text_scorer.score(texts)
    seconds = time.perf_counter() - start
  assert not scorer.stats.compile_seconds, "compiled during the timed call"
  return {"size": size, "documents": n, "seconds": seconds, "load_seconds": load_seconds,
          "warmup_seconds": warmup_seconds, "compile_seconds": compile_seconds,
          "tokenize_seconds": tokenize_seconds, "real_tokens": scorer.stats.real_tokens,
          "computed_tokens": scorer.stats.computed_tokens, "config": repr(scorer.config),
          "attention": scorer.runtime.attention, "precision": scorer.runtime.precision,
          "xla_flags": os.environ.get("XLA_FLAGS", ""), "peak_rss_gib": common.peak_rss_gib(),
          "others_busy": busy.fraction, "scores": scores.score.tolist(),
          "num_tokens": scores.num_tokens.tolist(), "lengths": common.length_summary(scores.num_tokens),
          "tokens_match": [len(t) for t in tokenized.ids] == scores.num_tokens.tolist()}


def _parse_config(items: list[str]) -> dict:
  out = {}
  for item in items:
    key, value = item.split("=", 1)
    try:
      out[key] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      out[key] = value
  return out


def report(runs: list[dict], label: str, command: str) -> str:
  lim = limits()
  rows = []
  for r in runs:
    f = figures(r, lim.get(r["size"]))
    shapes = ", ".join(sorted(r["compile_seconds"], key=lambda s: tuple(map(int, s.split("x")))[::-1]))
    rows.append([r["size"], r["documents"], f"{f['docs_per_s']:.2f}", f"{f['real_tokens_per_s']:.0f}",
                 f"{f['padding']:.1%}", f"{f['real_gflops']:.0f}", f"{f['of_limit']:.0%}" if f["of_limit"] else "-",
                 f"{f['computed_gflops']:.0f}", f"{len(r['compile_seconds'])}: {shapes}",
                 f"{sum(r['compile_seconds'].values()):.1f}", f"{r['load_seconds']:.1f}",
                 f"{r['peak_rss_gib']:.2f}"])
  lengths = runs[0]["lengths"]
  return "\n\n".join([
      common.provenance(runs, command),
      f"Documents: {lengths['documents']} (base), tokens per document after truncation p10 {lengths['p10']}, "
      f"median {lengths['p50']}, p90 {lengths['p90']}, mean {lengths['mean']:.0f}; "
      f"{lengths['at_max_length']:.1%} truncated to {common.MAX_LENGTH}. Config: `{runs[0]['config']}`, attention `{runs[0].get('attention', 'batched')}`"
      + (f", XLA_FLAGS `{runs[0]['xla_flags']}`" if runs[0]["xla_flags"] else "") + ".",
      common.table(["model", "docs", "docs/s", "real tok/s", "padding", "real GFLOP/s", "of limit",
                    "computed GFLOP/s", "compiled shapes (rows x length)", "compile s", "load s",
                    "peak RSS GiB"], rows)])


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--documents", type=int, default=768, help="documents for the base model")
  parser.add_argument("--large_documents", type=int, default=96, help="documents for the large model")
  parser.add_argument("--sizes", default="base,large")
  parser.add_argument("--config", action="append", default=[], help="RunnerConfig field=value, or dtype=..., attention=...")
  parser.add_argument("--xla_flags", default=None, help="XLA_FLAGS for the scoring process")
  parser.add_argument("--label", default="after")
  parser.add_argument("--no_doc", action="store_true", help="print and store figures, leave the doc alone")
  parser.add_argument("--variant", help=argparse.SUPPRESS)
  parser.add_argument("--json", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  overrides = _parse_config(args.config)

  if args.variant:
    n = args.documents if args.variant == "base" else args.large_documents
    result = measure(args.variant, n, overrides)
    with open(args.json, "w") as f:
      json.dump(result, f)
    return 0

  command = common.command_line()
  runs = []
  for size in args.sizes.split(","):
    common.checkpoint(size)
    common.wait_until_quiet()
    child = ["--documents", str(args.documents), "--large_documents", str(args.large_documents),
             "--variant", size, *(f"--config={c}" for c in args.config)]
    env = {"XLA_FLAGS": args.xla_flags} if args.xla_flags is not None else {}
    runs.append(common.run_variant("bench.scorer", child, env))
  common.save_results(f"scorer-{args.label}", {"runs": runs, "command": command})
  body = report(runs, args.label, command)
  print(body)
  if not args.no_doc:
    common.update_doc(f"scorer {args.label}", body)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
