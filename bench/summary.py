"""The issue's goals, met or not, and a paper estimate for TPUs, from the stored results.

    python -m bench.summary [--after after] [--before before]

Reads what bench.matmul, bench.reference, bench.scorer and bench.pipeline stored (nothing is
measured here) and writes the "goals" and "tpu" sections of docs/benchmarks.md.
"""
from __future__ import annotations

import argparse

import numpy as np

from bench import common
from bench.reference import figures

# Published bf16 peaks per chip (docs.cloud.google.com/tpu/docs/v5e, .../v6e) and on-demand
# prices per chip-hour in US regions (Google Cloud TPU pricing page; see docs/benchmarks.md).
TPUS = {"v5e": (197e12, 1.20), "v6e": (918e12, 2.70)}


def _run(results: dict, **match) -> dict:
  return next(r for r in results["runs"] if all(r.get(k) == v for k, v in match.items()))


def goals(after: str, before: str) -> tuple[str, dict]:
  limit = common.load_results("matmul")["limit"]
  reference = common.load_results("reference")
  scorer = common.load_results(f"scorer-{after}")
  pipeline = common.load_results(f"pipeline-{after}")
  old_pipeline = common.load_results(f"pipeline-{before}")

  base = _run(scorer, size="base")
  large = _run(scorer, size="large")
  f = figures(base, limit["base"])
  arrival = figures(_run(reference, size="base", order="arrival"), limit["base"])
  sorted_ = figures(_run(reference, size="base", order="sorted"), limit["base"])
  n = pipeline["documents"]
  first, second = pipeline["runs"]
  e2e = n / second["wall_seconds"]
  e2e_first = n / first["wall_seconds"]
  # What the scorer alone needs for these documents, after warm-up, scaled to the pipeline's count.
  scorer_seconds = base["seconds"] * n / base["documents"]
  overhead = second["wall_seconds"] - scorer_seconds
  compiled_again = second["cache_entries_after"] - second["cache_entries_before"]
  load_from_cache = sum(s for _, _, s in second["compiled"])

  rows = [
      ["scorer: real-token FLOP/s >= 85% of the matmul limit", f">= {0.85 * limit['base']:.0f} GFLOP/s",
       f"{f['real_gflops']:.0f} GFLOP/s = {f['of_limit']:.0%} of {limit['base']:.0f}", f["of_limit"] >= 0.85],
      ["pipeline.run >= 1.5x the arrival-order reference (docs/s)", f">= {1.5 * arrival['docs_per_s']:.2f}",
       f"{e2e:.2f} = {e2e / arrival['docs_per_s']:.2f}x (first run {e2e_first / arrival['docs_per_s']:.2f}x)",
       e2e >= 1.5 * arrival["docs_per_s"]],
      ["pipeline.run >= the length-sorted reference (docs/s)", f">= {sorted_['docs_per_s']:.2f}",
       f"{e2e:.2f} = {e2e / sorted_['docs_per_s']:.2f}x (first run {e2e_first / sorted_['docs_per_s']:.2f}x)",
       e2e >= sorted_["docs_per_s"]],
      ["padding <= 5% of computed tokens", "<= 5%", f"{f['padding']:.1%} (base), "
       f"{figures(large, limit['large'])['padding']:.1%} (large)", f["padding"] <= 0.05],
      ["pipeline overhead <= 10% of scorer time", f"<= {0.1 * scorer_seconds:.1f} s",
       f"{overhead:.1f} s = {overhead / scorer_seconds:.0%} of {scorer_seconds:.1f} s",
       overhead <= 0.1 * scorer_seconds],
      ["a second run compiles nothing", "0 new cache entries",
       f"{compiled_again} new entries; {len(second['compiled'])} programs loaded from the cache in "
       f"{load_from_cache:.1f} s (first run: {sum(s for _, _, s in first['compiled']):.1f} s)",
       compiled_again == 0],
      ["large shape within 24 GiB", "< 24 GiB", f"{large['peak_rss_gib']:.1f} GiB peak RSS", large["peak_rss_gib"] < 24],
  ]
  for label, setting in (("bf16", "bfloat16, one bf16 pass"), ("bf16x3", "bfloat16_3x, three bf16 passes")):
    results = common.load_results(f"scorer-{label}")
    if results:
      agree, max_diff, n_docs = bf16_agreement(_run(results, size="base"), base)
      rows.append([f"bf16 compute ({setting}): int_score as fp32 on >= 99.5% of documents", ">= 99.5%",
                   f"{agree:.2%} of {n_docs} (max abs score difference {max_diff:.2g})", agree >= 0.995])
  table = common.table(["goal", "target", "measured", "met"],
                       [[g, t, m, "**met**" if ok else "**not met**"] for g, t, m, ok in rows])
  speedup = ""
  if old_pipeline:
    old = old_pipeline["documents"] / old_pipeline["runs"][1]["wall_seconds"]
    speedup = (f" Before this work, the same pipeline command ran at {old:.2f} docs/s "
               f"(second run); after, {e2e:.2f} docs/s: {e2e / old:.2f}x.")
  text = (f"From results/: matmul, reference, scorer-{after}, pipeline-{after}. The scorer's time for "
          f"the pipeline's {n} documents is its measured call on the same documents "
          f"({base['seconds']:.1f} s for {base['documents']}); overhead is the rest of the pipeline's "
          f"second (warm-cache) run: interpreter start, imports, reading the model, Beam, reading "
          f"and writing shards.{speedup}")
  return text + "\n\n" + table, {"base": base, "large": large, "limit": limit}


def bf16_agreement(bf16: dict, fp32: dict) -> tuple[float, float, int]:
  """Fraction of documents whose int_score is the same in bf16 and fp32, and the largest score
  difference, over the same documents."""
  from model.recipe import int_scores
  low, high = np.asarray(bf16["scores"]), np.asarray(fp32["scores"])
  assert bf16["num_tokens"] == fp32["num_tokens"], "not the same documents"
  return float(np.mean(int_scores(low) == int_scores(high))), float(np.abs(low - high).max()), len(low)


def tpu_estimate(measured: dict) -> str:
  large = measured["large"]
  f = figures(large, measured["limit"]["large"])
  efficiency = f["of_limit"]
  flops_doc = common.flops_per_token("large") * large["real_tokens"] / large["documents"]
  rows = []
  for name, (peak, price) in TPUS.items():
    for label, eff in (("as reached here", efficiency), ("50%", 0.5), ("30%", 0.3)):
      docs_s = peak * eff / flops_doc
      per_million = lambda rate: f"${price / (rate * 3600) * 1e6:.3f}"
      rows.append([name, f"{peak / 1e12:.0f}", label if label != "as reached here" else f"{eff:.0%} (as here)",
                   f"{docs_s:,.0f}", f"${price:.2f}", per_million(docs_s), f"{docs_s / 3:,.0f}",
                   per_million(docs_s / 3)])
  return "\n\n".join([
      f"XLM-RoBERTa-large: {common.flops_per_token('large') / 1e6:.0f} MFLOP per real token "
      f"(bench/common.py), {large['real_tokens'] / large['documents']:.0f} real tokens per document on "
      f"the benchmark distribution: {flops_doc / 1e9:.0f} GFLOP per document. Efficiency = real-token "
      "FLOP/s over the chip's bf16 peak, padding and attention included; the first row of each chip "
      "takes the fraction of the matmul limit the scorer reaches on this CPU for the large model. "
      "`--dtype bfloat16_3x` multiplies every matmul in three bf16 passes: at most a third of the "
      "bf16 rate where the chip is matmul-bound, which is what the last two columns assume.",
      common.table(["chip", "bf16 peak TFLOP/s", "efficiency", "documents/s per chip",
                    "on-demand $/chip-hour", "$ per million documents", "bfloat16_3x: documents/s",
                    "bfloat16_3x: $ per million"], rows)])


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--after", default="after")
  parser.add_argument("--before", default="before")
  args = parser.parse_args(argv)
  command = common.command_line()
  text, measured = goals(args.after, args.before)
  common.update_doc("goals", f"Command: `{command}`.\n\n{text}")
  common.update_doc("tpu", f"Command: `{command}`.\n\n{tpu_estimate(measured)}")
  print(text)
  print(tpu_estimate(measured))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
