"""Scores in a fresh interpreter, for tests/model/test_devices.py.

jax fixes its device count when it first initialises, so fake devices
(XLA_FLAGS=--xla_force_host_platform_device_count=N) need their own process. Usage:
`python devices_worker.py REQUEST.json`; prints one JSON line: scores, mesh, compilations.
"""
from __future__ import annotations

import json
import re
import sys

import numpy as np

# Recorded once per XLA compilation, whichever path (jit call or .lower().compile()) asked.
BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"


def varied_calls(docs: list[np.ndarray], calls: int, seed: int):
  """Calls of 1 .. 3 x len(docs) documents, each cut to a random length (still <s> ... </s>)."""
  rng = np.random.default_rng(seed)
  for _ in range(calls):
    picked = rng.integers(0, len(docs), rng.integers(1, 3 * len(docs)))
    cuts = [rng.integers(2, len(docs[i]) + 1) for i in picked]
    yield [np.concatenate([docs[i][:cut - 1], docs[i][-1:]]) for i, cut in zip(picked, cuts)]


def main(request_path: str) -> None:
  with open(request_path, encoding="utf-8") as f:
    request = json.load(f)
  import jax
  compilations = []
  jax.monitoring.register_event_duration_secs_listener(
      lambda event, seconds, **_: compilations.append(event) if event == BACKEND_COMPILE else None)

  from model.runner import RunnerConfig, load_runner
  scorer = load_runner(request["model_dir"], RunnerConfig(**request["scorer"]), precision="float32")
  scorer.warmup()
  after_warmup = (len(compilations), len(scorer._compiled))

  docs = [np.asarray(d, np.int32) for d in request["ids"]]
  scores = scorer.run(docs)
  scored = len(docs)
  for call in varied_calls(docs, request["calls"], request["seed"]):
    assert np.isfinite(scorer.run(call)).all()
    scored += len(call)

  rows = scorer._executable(*scorer.shapes[0]).input_shardings[0][1]  # input_ids
  # Each custom call of the fused CPU attention, with the rows it was given, in every program.
  programs = {f"{r}x{l}": scorer._executable(r, l).as_text() for r, l in scorer.shapes}
  fused_calls = {shape: [int(m) for m in re.findall(r"f32\[(\d+),[\d,]+\][^ ]* custom-call\(.*"
                                                     r"koedu_fused_attention", text)]
                 for shape, text in programs.items()}
  print(json.dumps({
      "device_count": jax.device_count(),
      "mesh_axis_names": list(scorer.runtime.mesh.axis_names),
      "mesh_devices": int(scorer.runtime.mesh.devices.size),
      "row_sharding": [list(rows.spec), len(rows.device_set)],
      "shapes": scorer.shapes,
      "warmup_compilations": after_warmup[0],
      "compiled_after_warmup": after_warmup[1],
      "compilations_after_warmup": len(compilations) - after_warmup[0],
      "compiled_at_end": len(scorer._compiled),
      "documents_scored": scored,
      "attention": scorer.runtime.attention,
      "fused_call_rows": fused_calls,
      "all_gathers": sum(text.count("all-gather") for text in programs.values()),
      "scores": scores.tolist(),
  }))


if __name__ == "__main__":
  main(sys.argv[1])
