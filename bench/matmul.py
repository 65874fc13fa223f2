"""The machine's practical matmul peak at the encoder's shapes, through JAX and through PyTorch.

    python -m bench.matmul [--tokens 8192] [--seconds 3]

For base and large, times [tokens, in] x [in, out] for every weight matrix shape of a layer
(Q, K, V and the attention output are [h, h]; the FFN is [h, 4h] and [4h, h]) and reports
GFLOP/s per shape and for the layer's mix (total FLOPs over total time, each shape weighted by
how often a layer runs it). The limit the other benchmarks compare against is the higher mix of
the two frameworks, fp32, at the same thread count (every core).

JAX runs once per set of XLA flags (flags are read when the backend starts, so each set gets its
own process): this jaxlib sends dots to YNNPACK by default; the variants turn that off (XLA's
Eigen kernels) or hand dots to oneDNN or XNNPACK instead (their enum names, as compiler options
take them). bf16 also runs koedu's own AMX kernel (model/cpu_matmul.py, weights packed before the
clock as the model packs them at load) where the CPU has AMX: none of XLA's CPU dot libraries in
this jaxlib reaches AMX (`ONEDNN_VERBOSE=1` shows its oneDNN path running fp32 `gemm_api`).
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from bench import common

# name -> XLA_FLAGS. The flag names are from this jaxlib's own flag table (xla/debug_options_flags.cc).
JAX_VARIANTS = {
    "jax (default: YNNPACK dots)": "",
    "jax, YNNPACK off (Eigen)": "--xla_cpu_experimental_ynn_fusion_type=",
    "jax, oneDNN dots": "--xla_cpu_experimental_ynn_fusion_type= "
                        "--xla_cpu_experimental_onednn_fusion_type=LIBRARY_FUSION_TYPE_DOT",
    "jax, XNNPACK dots": "--xla_cpu_experimental_ynn_fusion_type= "
                         "--xla_cpu_experimental_xnn_fusion_type=LIBRARY_FUSION_TYPE_DOT",
}
AMX = "koedu AMX kernel (bf16 only)"


def _time(fn, seconds: float) -> float:
  """Median seconds per call over at least `seconds` (and 5 calls), after one warm-up call."""
  fn()
  times, start = [], time.perf_counter()
  while len(times) < 5 or time.perf_counter() - start < seconds:
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return float(np.median(times))


def measure(framework: str, dtype: str, tokens: int, seconds: float) -> dict:
  """GFLOP/s of every shape of base and large in this process."""
  rng = np.random.default_rng(0)
  out = {}
  if framework == "torch":
    import torch
    tdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    threads = torch.get_num_threads()
  else:
    import jax
    import jax.numpy as jnp
    jdtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[dtype]
    matmul = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jdtype))
    if framework == "koedu-amx":
      from model import cpu_matmul
      matmul = jax.jit(lambda a, b: cpu_matmul.dot_general(a, b, (((1,), (0,)), ((), ()))))
    threads = os.cpu_count()
  for size in common.SIZES:
    for k, n, _ in common.matmul_shapes(size):
      x = rng.standard_normal((tokens, k), np.float32)
      w = rng.standard_normal((k, n), np.float32) / np.sqrt(k)
      if framework == "torch":
        import torch
        xt, wt = torch.from_numpy(x).to(tdtype), torch.from_numpy(w).to(tdtype)
        with torch.inference_mode():
          seconds_per_call = _time(lambda: xt @ wt, seconds)
      else:
        xj, wj = jnp.asarray(x, jdtype), jnp.asarray(w, jdtype)
        if framework == "koedu-amx":
          wj = jnp.asarray(cpu_matmul.pack(np.asarray(wj)))
        seconds_per_call = _time(lambda: matmul(xj, wj).block_until_ready(), seconds)
      out[f"{k}x{n}"] = 2 * tokens * k * n / seconds_per_call / 1e9
  return {"gflops": out, "threads": threads}


def layer_mix(gflops: dict, size: str) -> float:
  """GFLOP/s of one layer's weight matmuls: total FLOPs over the sum of each shape's time."""
  flops = sum(k * n * c for k, n, c in common.matmul_shapes(size))
  seconds = sum(k * n * c / gflops[f"{k}x{n}"] for k, n, c in common.matmul_shapes(size))
  return flops / seconds


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--tokens", type=int, default=8192, help="rows of the activation matrix")
  parser.add_argument("--seconds", type=float, default=3.0, help="time per shape")
  parser.add_argument("--variant", help=argparse.SUPPRESS)  # framework:dtype, in a child process
  parser.add_argument("--json", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)

  if args.variant:
    framework, dtype = args.variant.split(":")
    with common.Interference().measure() as busy:
      result = measure(framework, dtype, args.tokens, args.seconds)
    result["others_busy"] = busy.fraction
    with open(args.json, "w") as f:
      json.dump(result, f)
    return 0

  command = common.command_line()
  runs = []
  from model import cpu_matmul
  amx = [(AMX, "")] if cpu_matmul.unavailable_reason() is None else []
  for dtype in ("float32", "bfloat16"):
    for name, flags in [("torch", None), *JAX_VARIANTS.items(), *(amx if dtype == "bfloat16" else [])]:
      common.wait_until_quiet()
      env = {"XLA_FLAGS": flags} if flags is not None else {}
      framework = "torch" if flags is None else "koedu-amx" if name == AMX else "jax"
      result = common.run_variant("bench.matmul", ["--tokens", str(args.tokens), "--seconds", str(args.seconds),
                                                   "--variant", f"{framework}:{dtype}"], env)
      result.update(name=name, dtype=dtype, xla_flags=flags)
      result["mix"] = {size: layer_mix(result["gflops"], size) for size in common.SIZES}
      runs.append(result)
      common.log(f"{name} {dtype}: " + ", ".join(f"{k} {v:.0f}" for k, v in result["gflops"].items())
                 + " GFLOP/s; layer mix " + ", ".join(f"{s} {v:.0f}" for s, v in result["mix"].items()))

  fp32 = [r for r in runs if r["dtype"] == "float32"]
  limit = {size: max(r["mix"][size] for r in fp32) for size in common.SIZES}
  limit_by = {size: max(fp32, key=lambda r: r["mix"][size])["name"] for size in common.SIZES}
  common.save_results("matmul", {"runs": runs, "limit": limit, "limit_by": limit_by, "tokens": args.tokens,
                                 "command": command})
  shapes = [f"{k}x{n}" for size in common.SIZES for k, n, _ in common.matmul_shapes(size)]
  rows = [[r["name"], r["dtype"], r["threads"], *(f"{r['gflops'][s]:.0f}" for s in shapes),
           *(f"**{r['mix'][size]:.0f}**" for size in common.SIZES)] for r in runs]
  body = "\n\n".join([
      common.provenance(runs, command),
      f"GFLOP/s of [{args.tokens}, in] x [in, out], median of repeated calls; \"mix\" is one layer's "
      "weight matmuls (4 x [h, h], [h, 4h], [4h, h]): total FLOPs over total time.",
      common.table(["framework", "dtype", "threads", *shapes, "base mix", "large mix"], rows),
      "**Limit (fp32, the higher framework):** " + ", ".join(
          f"{size} {limit[size]:.0f} GFLOP/s ({limit_by[size]})" for size in common.SIZES) + "."])
  common.update_doc("matmul", body)
  print(json.dumps({"limit": limit, "limit_by": limit_by}, indent=1))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
