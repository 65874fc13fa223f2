"""bench/gpu.py's --smoke mode: every stage of the GPU benchmark, on CPU at tiny shapes, so the
command a GPU session runs has run before it gets there."""
from __future__ import annotations

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_the_gpu_benchmark_runs_every_stage_in_smoke_mode(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO, KOEDU_BENCH_DIR=str(tmp_path / "bench"))
  done = subprocess.run([sys.executable, "-m", "bench.gpu", "--smoke", "--out", str(tmp_path),
                         "--work", str(tmp_path / "work")], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  r = json.load(open(tmp_path / "gpu.json"))
  assert r["platform"] == "cpu" and r["skipped"] == []
  # The fp32 reference is koedu's, and transformers + PyTorch agree with it on this machine.
  assert r["torch_float32_vs_koedu_float32"]["max_abs_diff"] <= 1e-4
  assert set(r["koedu"]) == {"batched", "rows"}
  for name, k in r["koedu"].items():
    assert "error" not in k, (name, k)
    assert k["precision"] == "bfloat16" and k["attention"] == name and k["docs_per_s"] > 0
    assert 0 < k["max_abs_diff"] < 1 and k["int_score_agreement"] >= 0.75
    assert k["shapes"] and all(length <= 64 for _, length in k["shapes"])
  t = r["torch_bfloat16"]
  assert t["docs_per_s"] > 0 and t["int_score_agreement"] >= 0.75 and t["batch"] == 16
  assert [h["threads"] for h in r["host"]] == [1, 2]
  assert all(h["documents"] == 192 and h["batches"] > 0 for h in r["host"])
  same = r["bf16_vs_fp32_same_documents"]
  assert same["documents"] == 4 and same["cpu"]["max_abs_diff"] > 0
  report = open(tmp_path / "gpu.md").read()
  assert "| koedu bf16, batched attention |" in report and "transformers + PyTorch bf16 SDPA" in report
  assert report.strip() in done.stdout
