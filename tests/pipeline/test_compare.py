"""`python -m pipeline.compare` on real runs: the fp32-vs-bf16 check of docs/operations.md."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from model.recipe import int_scores
from tests.pipeline.conftest import read_scores, run_compare, score_sample_corpus


@pytest.fixture(scope="module")
def two_dtypes(scored_corpus, spread_model, tmp_path_factory):
  bf16 = str(tmp_path_factory.mktemp("bfloat16"))
  score_sample_corpus(spread_model, bf16, "--dtype", "bfloat16")
  return {"float32": scored_corpus[0], "bfloat16": bf16}


def test_figures_are_those_of_the_two_scores(two_dtypes, tmp_path):
  a, b = two_dtypes["float32"], two_dtypes["bfloat16"]
  figures = str(tmp_path / "compare.json")
  proc = run_compare(a, b, "--min_agreement", "0", "--json", figures)
  assert proc.returncode == 0, proc.stderr
  result = json.load(open(figures))
  # Recomputed here from the two scores/ directly.
  rows_a = {(r["source"], r["row"]): r for r in read_scores(a)}
  rows_b = {(r["source"], r["row"]): r for r in read_scores(b)}
  assert rows_a.keys() == rows_b.keys() and result["documents"] == len(rows_a) > 20
  keys = sorted(rows_a)
  score_a = np.array([rows_a[k]["score"] for k in keys])
  score_b = np.array([rows_b[k]["score"] for k in keys])
  assert not np.array_equal(score_a, score_b), "the bf16 run computed in fp32"
  same = np.mean(int_scores(score_a) == int_scores(score_b))
  assert result["agreement"] == pytest.approx(same)
  assert result["max_abs_score_diff"] == pytest.approx(np.abs(score_a - score_b).max(), rel=1e-5)
  assert np.sum(result["confusion"]) == len(keys)
  assert np.trace(result["confusion"]) == round(same * len(keys))
  assert f"{same:.2%}" in proc.stdout


def test_exit_status_says_whether_to_trust_bf16(two_dtypes, tmp_path):
  a = two_dtypes["float32"]
  assert run_compare(a, a).returncode == 0
  # A copy of A in which every document's int_score moved by one: agreement 0.
  moved = tmp_path / "moved"
  shutil.copytree(a, moved)
  for path in (moved / "scores").glob("*.parquet"):
    table = pq.read_table(path)
    shifted = pa.array((np.asarray(table["int_score"]) + 1) % 6, table.schema.field("int_score").type)
    pq.write_table(table.set_column(table.schema.get_field_index("int_score"), "int_score", shifted), path)
  proc = run_compare(a, str(moved))
  assert proc.returncode == 1 and "below 99.50%" in proc.stderr
  # Runs over different documents are not compared.
  partial = tmp_path / "partial"
  shutil.copytree(a, partial)
  os.remove(sorted((partial / "scores").glob("*.parquet"))[0])
  proc = run_compare(a, str(partial))
  assert proc.returncode == 2 and "not score the same documents" in proc.stderr
  assert run_compare(a, str(tmp_path / "missing")).returncode == 2
  broken = tmp_path / "broken"
  shutil.copytree(a, broken)
  sorted((broken / "scores").glob("*.parquet"))[0].write_bytes(b"not parquet")
  proc = run_compare(a, str(broken))
  assert proc.returncode == 2 and "cannot read scores/" in proc.stderr
