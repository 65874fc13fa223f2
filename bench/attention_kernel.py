"""The fused bf16 attention kernel alone (model/kernels/attention*.h): AVX512-BF16 against AMX.

    python -m bench.attention_kernel [--rows 8] [--length 512] [--repeats 30]

One process, both builds of the kernel called in turn on the same inputs (qkv (rows, length, 3,
12, 64) bf16), once with one document filling each row and once with rows packed with documents
of about 150 tokens, so that a busy machine slows both alike. Reports the median wall ms per
call, the process CPU ms per call (both threads; what another process takes does not count) and
effective GFLOP/s: 4 * d * heads * sum over documents of n^2, the FLOPs of the two products over
the keys each query may see, per wall second.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

HEADS, HEAD_DIM = 12, 64
VARIANTS = ("avx512bf16", "amx")


def segments(rng, rows: int, length: int, document: int | None) -> np.ndarray:
  """One document per row (document None), or documents of document +-20% tokens back to back."""
  if document is None:
    return np.ones((rows, length), np.int32)
  out = np.zeros((rows, length), np.int32)
  for row in out:
    start, segment = 0, 1
    while start < length:
      n = int(rng.integers(document * 4 // 5, document * 6 // 5 + 1))
      row[start:start + n] = segment
      start, segment = start + n, segment + 1
  return out


def useful_flops(ids: np.ndarray) -> int:
  total = 0
  for row in ids:
    _, counts = np.unique(row[row != 0], return_counts=True)
    total += int((counts.astype(np.int64) ** 2).sum())
  return 4 * HEAD_DIM * HEADS * total


def measure(rows: int, length: int, repeats: int, document: int | None) -> dict:
  import jax
  import jax.numpy as jnp

  from model import fused_attention
  rng = np.random.default_rng(0)
  qkv = jnp.asarray(rng.standard_normal((rows, length, 3, HEADS, HEAD_DIM)) * 3, jnp.bfloat16)
  ids = segments(rng, rows, length, document)
  seg = jnp.asarray(ids)
  calls = {v: jax.jit(lambda x, s, v=v: fused_attention.fused_attention(x, s, v)) for v in VARIANTS}
  for v in VARIANTS:
    calls[v](qkv, seg).block_until_ready()
  wall = {v: [] for v in VARIANTS}
  cpu = {v: [] for v in VARIANTS}
  for _ in range(repeats):
    for v in VARIANTS:  # interleaved: both see the same minute of the machine
      c, t = time.process_time(), time.perf_counter()
      calls[v](qkv, seg).block_until_ready()
      wall[v].append(time.perf_counter() - t)
      cpu[v].append(time.process_time() - c)
  flops = useful_flops(ids)
  out = {}
  for v in VARIANTS:
    w, c = float(np.median(wall[v])), float(np.median(cpu[v]))
    out[v] = {"ms": round(w * 1e3, 2), "cpu_ms": round(c * 1e3, 2), "gflops": round(flops / w / 1e9, 1)}
  out["speedup"] = round(out["avx512bf16"]["ms"] / out["amx"]["ms"], 2)
  return out


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--rows", type=int, default=8)
  parser.add_argument("--length", type=int, default=512)
  parser.add_argument("--repeats", type=int, default=30)
  args = parser.parse_args(argv)
  result = {}
  for name, document in (("one document per row", None), ("packed, ~150-token documents", 150)):
    result[name] = measure(args.rows, args.length, args.repeats, document)
    print(f"{name}: " + json.dumps(result[name]), flush=True)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
