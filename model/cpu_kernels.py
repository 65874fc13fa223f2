"""koedu's C++ CPU kernels (model/kernels/): built on first use, one variant per instruction set,
the best one this CPU runs loaded and registered with XLA as FFI custom calls.

| variant      | needs (cpuinfo flags)             | holds                                              |
|--------------|-----------------------------------|----------------------------------------------------|
| `amx`        | avx512f, avx512_bf16, amx_bf16/tile | fused attention (fp32; bf16 on AMX tiles), the AMX bf16 matmul with bias and GELU |
| `avx512bf16` | avx512f, avx512_bf16              | fused attention (fp32; bf16 by AVX512-BF16 dot products) |
| `avx512`     | avx512f                           | fused attention (fp32; bf16 widened to fp32 FMAs)   |

Each variant is built once per source, flags and jax version with the local C++ compiler
(`$CXX`, else `c++` or `g++`) into --kernel_cache_dir ($KOEDU_KERNEL_CACHE, else
~/.cache/koedu/kernels: model/caches.py), and loaded from there afterwards: an image can ship
built libraries there and no compiler. Where any of
that is missing, `unavailable_reason()` says why and the model runs XLA's own ops instead.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile

import jax
import jaxlib

from model import caches

log = logging.getLogger(__name__)

KERNEL_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels")
SOURCES = ("attention.h", "epilogue.h", "tiles.h", "attention_amx.h", "attention.cc", "matmul.h", "matmul.cc", "pool.h")
FLAGS = ("-O3", "-mavx512f", "-mfma", "-std=c++17", "-shared", "-fPIC", "-pthread")
# name -> (cpuinfo flags it needs, extra compiler flags, translation units), best first.
VARIANTS = {
    "amx": (("avx512f", "avx512_bf16", "amx_bf16", "amx_tile"),
            ("-mavx512bw", "-mavx512vl", "-mavx512bf16", "-mamx-tile", "-mamx-bf16"),
            ("attention.cc", "matmul.cc")),
    "avx512bf16": (("avx512f", "avx512_bf16"), ("-mavx512bw", "-mavx512vl", "-mavx512bf16"),
                   ("attention.cc",)),
    "avx512": (("avx512f",), (), ("attention.cc",)),
}
ATTENTION_F32, ATTENTION_BF16 = "koedu_fused_attention", "koedu_fused_attention_bf16"
# The AMX matmul with its epilogue, by output dtype.
AMX_LINEAR = {"float32": "koedu_amx_linear_f32", "bfloat16": "koedu_amx_linear_bf16"}


def default_cache_dir() -> str:
  return caches.directory("kernels")


def compiler() -> str | None:
  return next((c for c in (os.environ.get("CXX"), "c++", "g++") if c and shutil.which(c)), None)


@functools.cache
def cpu_flags() -> frozenset[str]:
  """This CPU's feature flags as /proc/cpuinfo names them; empty off x86-64 or Linux."""
  if platform.machine().lower() not in ("x86_64", "amd64"):
    return frozenset()
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      line = next((line for line in f if line.startswith("flags")), "")
  except OSError:
    return frozenset()
  return frozenset(line.partition(":")[2].split())


def best_variant(flags=None) -> str | None:
  flags = cpu_flags() if flags is None else flags
  return next((name for name, (needs, _, _) in VARIANTS.items() if set(needs) <= flags), None)


def library_path(cache_dir: str, variant: str = "avx512") -> str:
  """Where the library built from these sources, flags and jax version lives."""
  digest = hashlib.sha256()
  for name in SOURCES:
    with open(os.path.join(KERNEL_DIR, name), "rb") as f:
      digest.update(f.read())
  digest.update(repr((FLAGS, VARIANTS[variant], jax.__version__, jaxlib.__version__)).encode())
  return os.path.join(cache_dir, f"koedu_kernels_{variant}_{digest.hexdigest()[:16]}.so")


def build(cxx: str | None, cache_dir: str, variant: str = "avx512") -> str:
  """The shared library's path, compiling it with `cxx` unless it is already there."""
  target = library_path(cache_dir, variant)
  if os.path.exists(target):
    return target
  if cxx is None:
    raise RuntimeError(f"no C++ compiler to build {target} (set $CXX, or install g++)")
  os.makedirs(cache_dir, exist_ok=True)
  # Built beside its final name and renamed into place, so workers sharing a cache directory
  # never load a half-written library.
  fd, partial = tempfile.mkstemp(suffix=".so", dir=cache_dir)
  os.close(fd)
  _, extra, units = VARIANTS[variant]
  done = subprocess.run([cxx, *FLAGS, *extra, "-isystem", jax.ffi.include_dir(),
                         *(os.path.join(KERNEL_DIR, u) for u in units), "-o", partial],
                        capture_output=True, text=True)
  if done.returncode != 0:
    os.unlink(partial)
    raise RuntimeError(f"{cxx} could not build the {variant} CPU kernels:\n{done.stderr[-2000:]}")
  os.replace(partial, target)
  log.info("built the %s CPU kernels into %s", variant, target)
  return target


def load(variant: str | None = None) -> tuple[str, ctypes.CDLL]:
  """(variant, library): `variant` (default: the best this CPU runs) built, loaded and its
  targets registered with XLA. Raises RuntimeError or OSError saying why not."""
  variant = variant or best_variant()
  if variant is None:
    raise RuntimeError("this CPU has no AVX-512F")
  needs = set(VARIANTS[variant][0]) - cpu_flags()
  if needs:
    raise RuntimeError(f"this CPU lacks {', '.join(sorted(needs))} for the {variant} kernels")
  return _load(variant)


@functools.cache
def _load(variant: str) -> tuple[str, ctypes.CDLL]:
  library = ctypes.CDLL(build(compiler(), default_cache_dir(), variant))
  jax.ffi.register_ffi_target(f"{ATTENTION_F32}_{variant}", jax.ffi.pycapsule(library.KoeduFusedAttention),
                              platform="cpu")
  jax.ffi.register_ffi_target(f"{ATTENTION_BF16}_{variant}",
                              jax.ffi.pycapsule(library.KoeduFusedAttentionBf16), platform="cpu")
  if variant == "amx":
    if library.KoeduRequestAmx() != 0:
      raise RuntimeError("Linux refused this process the AMX tile state (arch_prctl)")
    for name, symbol in zip(AMX_LINEAR.values(), ("KoeduAmxLinearF32", "KoeduAmxLinearBf16")):
      jax.ffi.register_ffi_target(f"{name}_{variant}", jax.ffi.pycapsule(getattr(library, symbol)),
                                  platform="cpu")
  return variant, library


@functools.cache
def unavailable_reason(variant: str | None = None) -> str | None:
  """None once `variant` (default: the best for this CPU) is built and registered; else why not."""
  try:
    load(variant)
  except (OSError, RuntimeError, subprocess.SubprocessError) as e:
    return str(e)
  return None


def target(name: str, variant: str | None = None) -> str:
  """The registered FFI target `name` of the loaded `variant`."""
  return f"{name}_{load(variant)[0]}"


if __name__ == "__main__":
  # Build ahead of time, e.g. into an image that ships no compiler:
  # KOEDU_KERNEL_CACHE=/opt/koedu/kernels python -m model.cpu_kernels [variant ...]
  import sys
  for name in sys.argv[1:] or [best_variant() or "avx512"]:
    print(build(compiler(), default_cache_dir(), name))
