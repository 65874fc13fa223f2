"""`python -m pipeline.compare`: how far two scoring runs of the same input agree.

  python -m pipeline.compare DIR_A DIR_B [--min_agreement 0.995] [--json FILE]

Made for the check before a large TPU job (docs/operations.md): score one shard with
`--dtype float32` into DIR_A and with `--dtype bfloat16` into DIR_B, then compare. Documents are
matched by (source, row) across the two `scores/`. Prints how many matched, the share whose
int_score is the same, the int_score confusion table and the raw score differences. Exit status:
0 when agreement >= --min_agreement, 1 when below, 2 when the runs did not score the same
documents (compare runs over the same input, both finished).
"""
from __future__ import annotations

import json
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import options
from pipeline import io

KEYS = ["source", "row"]
CLASSES = 6  # int_score is 0..5


def read_scores(output: str) -> pa.Table:
  """Every row of DIR/scores/, the columns the comparison needs."""
  directory = output.rstrip("/") + "/scores"
  tables = []
  for name in io.list_names(directory, ".parquet"):
    fs, path = io.filesystem(f"{directory}/{name}")
    with fs.open(path, "rb") as f:
      tables.append(pq.read_table(f, columns=KEYS + ["score", "int_score"]))
  if not tables:
    raise FileNotFoundError(f"no scores/*.parquet under {output}")
  return pa.concat_tables(tables)


def compare(a: pa.Table, b: pa.Table) -> dict:
  """Agreement of b with a over the documents both scored."""
  both = a.join(b, keys=KEYS, join_type="inner", left_suffix="_a", right_suffix="_b")
  int_a = both["int_score_a"].to_numpy().astype(np.int64)
  int_b = both["int_score_b"].to_numpy().astype(np.int64)
  diff = np.abs(both["score_a"].to_numpy().astype(np.float64) - both["score_b"].to_numpy())
  confusion = np.zeros((CLASSES, CLASSES), np.int64)
  np.add.at(confusion, (int_a, int_b), 1)
  n = both.num_rows
  return {
      "documents": n,
      "only_in_a": a.num_rows - n,
      "only_in_b": b.num_rows - n,
      "agreement": float(np.mean(int_a == int_b)) if n else float("nan"),
      "changed_by_more_than_one": int(np.sum(np.abs(int_a - int_b) > 1)),
      "mean_abs_score_diff": float(diff.mean()) if n else float("nan"),
      "max_abs_score_diff": float(diff.max()) if n else float("nan"),
      "confusion": confusion.tolist(),  # [int_score in a][int_score in b]
  }


def report(result: dict, a: str, b: str) -> str:
  lines = [f"A = {a}", f"B = {b}",
           f"documents in both: {result['documents']}; only in A: {result['only_in_a']}; "
           f"only in B: {result['only_in_b']}",
           f"int_score the same: {result['agreement']:.2%}; off by more than one: "
           f"{result['changed_by_more_than_one']}",
           f"|score A - score B|: mean {result['mean_abs_score_diff']:.4f}, "
           f"max {result['max_abs_score_diff']:.4f}",
           "int_score confusion (rows A, columns B):",
           "      " + "".join(f"{c:>8}" for c in range(CLASSES))]
  lines += [f"{r:>6}" + "".join(f"{v:>8}" for v in row) for r, row in enumerate(result["confusion"])]
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = options.parser("pipeline.compare", doc=__doc__)  # options/catalog.py
  args = parser.parse_args(argv)
  if not 0 <= args.min_agreement <= 1:
    parser.error("--min_agreement must be within 0..1")
  try:
    result = compare(read_scores(args.a), read_scores(args.b))
  except FileNotFoundError as err:
    print(f"koedu: {err}", file=sys.stderr)
    return 2
  except (pa.ArrowException, OSError) as err:  # a scores/ file that is not our Parquet
    print(f"koedu: cannot read scores/: {type(err).__name__}: {err}", file=sys.stderr)
    return 2
  print(report(result, args.a, args.b))
  if args.json:
    io.write_bytes_atomic(args.json, json.dumps(result, indent=2).encode())
  if result["only_in_a"] or result["only_in_b"] or not result["documents"]:
    print("koedu: the two runs did not score the same documents", file=sys.stderr)
    return 2
  if result["agreement"] < args.min_agreement:
    print(f"koedu: int_score agreement {result['agreement']:.2%} is below "
          f"{args.min_agreement:.2%}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  from pipeline.process import exit_now
  exit_now(main())
