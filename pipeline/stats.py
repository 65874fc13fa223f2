"""Run statistics: `stats.json` from every shard's marker, a score histogram, a short summary."""
from __future__ import annotations

import collections
import dataclasses
import datetime
import io as _io
import json
import time

from pipeline import io, outputs
from pipeline.options import ScoringConfig

STATS = "stats.json"
HISTOGRAM = "score_histogram.png"


@dataclasses.dataclass(frozen=True)
class RunInfo:
  model: str
  revision: str | None
  weights_digest: str
  started: float  # time.time() when the run started
  shards_total: int  # shards the globs matched
  shards_this_run: int  # shards not finished by an earlier run


def totals(markers: list[dict]) -> dict:
  t = collections.Counter()
  reasons = collections.Counter()
  histogram = [0] * 6
  fine = [0] * (len(outputs.SCORE_BINS) - 1)
  for m in markers:
    t.update({k: m[k] for k in ("records", "scored", "kept", "errored", "tokens", "truncated")})
    reasons.update(m["errors_by_reason"])
    histogram = [a + b for a, b in zip(histogram, m["int_score_histogram"])]
    fine = [a + b for a, b in zip(fine, m["score_histogram"])]
  return {"records_read": t["records"], "scored": t["scored"], "kept": t["kept"],
          "errored": t["errored"], "errors_by_reason": dict(sorted(reasons.items())),
          "tokens": t["tokens"], "truncated": t["truncated"],
          "int_score_histogram": {str(i): n for i, n in enumerate(histogram)},
          "score_histogram": {"bin_edges": [float(e) for e in outputs.SCORE_BINS], "counts": fine}}


def finish(config: ScoringConfig, run: RunInfo) -> dict:
  """Writes stats.json (and the histogram picture) from every marker in the output."""
  markers = outputs.read_markers(config.output)
  wall = time.time() - run.started
  report = totals(markers)
  this_run_scored = run_scored(markers, run)
  report.update({
      "shards": {"matched": run.shards_total, "complete": len(outputs.complete_shards(config.output)),
                 "this_run": run.shards_this_run},
      "chunks": len(markers),
      "model": run.model, "model_revision": run.revision, "weights_digest": run.weights_digest,
      "threshold": config.threshold, "max_length": config.max_length,
      "text_field": config.text_field, "id_field": config.id_field,
      "started": datetime.datetime.fromtimestamp(run.started, datetime.timezone.utc).isoformat(),
      "wall_time_seconds": round(wall, 3),
      "documents_per_second": round(this_run_scored / wall, 3) if wall > 0 else None,
      "scored_this_run": this_run_scored,
  })
  io.write_bytes_atomic(io.join(config.output, STATS), json.dumps(report, indent=2).encode())
  io.write_bytes_atomic(io.join(config.output, HISTOGRAM), histogram_png(report, config.threshold))
  return report


def run_scored(markers: list[dict], run: RunInfo) -> int:
  """Documents scored by this run: markers written since it started."""
  return sum(m["scored"] for m in markers if m.get("written", 0) >= run.started)


def histogram_png(report: dict, threshold: float) -> bytes:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  counts = [report["int_score_histogram"][str(i)] for i in range(6)]
  fig, (ax, raw) = plt.subplots(1, 2, figsize=(10, 3.5), dpi=100)
  colors = ["#4c78a8" if i >= threshold else "#bab0ac" for i in range(6)]
  ax.bar(range(6), counts, color=colors)
  for i, n in enumerate(counts):
    ax.annotate(f"{n:,}", (i, n), ha="center", va="bottom", fontsize=8)
  ax.set_xlabel("int_score")
  ax.set_ylabel("documents")
  ax.set_title(f"{report['scored']:,} scored, {report['kept']:,} kept (int_score >= {threshold:g})")
  edges = report["score_histogram"]["bin_edges"]
  raw.stairs(report["score_histogram"]["counts"], edges, fill=True, color="#4c78a8")
  # int_score >= t exactly when the raw score is at least t - 0.5 (halves round to even).
  raw.axvline(threshold - 0.5, color="#e45756", linestyle="--", label=f"int_score {threshold:g} begins")
  raw.set_xlabel("score (raw model output, clipped to -1..6 here)")
  raw.set_title("raw scores")
  raw.legend(fontsize=8)
  fig.tight_layout()
  buffer = _io.BytesIO()
  fig.savefig(buffer, format="png")
  plt.close(fig)
  return buffer.getvalue()


def summary(report: dict) -> str:
  lines = [f"koedu: {report['records_read']:,} records read, {report['scored']:,} scored, "
           f"{report['kept']:,} kept (int_score >= {report['threshold']:g}), {report['errored']:,} errors"]
  for reason, n in report["errors_by_reason"].items():
    lines.append(f"  errors {reason}: {n:,}")
  lines.append("  int_score histogram: " + ", ".join(f"{k}: {v:,}" for k, v in report["int_score_histogram"].items()))
  lines.append(f"  shards: {report['shards']['complete']}/{report['shards']['matched']} complete, "
               f"{report['shards']['this_run']} read this run")
  if report.get("documents_per_second") is not None:
    lines.append(f"  this run: {report['scored_this_run']:,} documents in {report['wall_time_seconds']:.1f}s "
                 f"({report['documents_per_second']:.1f} documents/s)")
  return "\n".join(lines)
