"""`python -m train.run`: fine-tune the classifier with the seed's recipe (../shared contract).

    python -m train.run --data 'gs://bucket/annotations/*.parquet' --output gs://bucket/run1 \
        [--model nlpai-lab/KoE5] [--no_freeze_encoder] [--epochs 20 | --max_steps N] ...

Parses flags into a TrainConfig and hands it to train.loop; nothing else happens here.
"""
from __future__ import annotations

import argparse
import logging
import sys

from model.precision import COMPUTE
from train.config import DEFAULT_BASE, FROZEN_LEARNING_RATE, FULL_LEARNING_RATE, TrainConfig


def _globs(value: str) -> tuple[str, ...]:
  return tuple(g for g in value.split(",") if g)


def _switch(p: argparse.ArgumentParser, name: str, default: bool, help: str) -> None:
  """--name / --no_name, in the contract's snake_case (argparse's own makes --no-name)."""
  group = p.add_mutually_exclusive_group()
  group.add_argument(f"--{name}", dest=name, action="store_true", help=help)
  group.add_argument(f"--no_{name}", dest=name, action="store_false")
  p.set_defaults(**{name: default})


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m train.run", description=__doc__.split("\n\n")[0])
  d = TrainConfig(data=("-",), output="-")  # defaults, from the one place they are defined
  p.add_argument("--data", required=True, type=_globs, help="shard globs, comma-separated")
  p.add_argument("--output", required=True, help="directory for the model, reports, checkpoints")
  p.add_argument("--model", default=DEFAULT_BASE,
                 help="base: hub id, local or fsspec directory; a classifier to continue or an "
                      "encoder-only checkpoint to add a fresh head to")
  p.add_argument("--eval_data", type=_globs, default=(), help="held-out shard globs (default: split off --data)")
  p.add_argument("--text_field", default=d.text_field)
  p.add_argument("--label_field", default=d.label_field)
  _switch(p, "freeze_encoder", d.freeze_encoder, "train the head only (default), or everything")
  _switch(p, "cache_features", d.cache_features,
          "with a frozen encoder, encode each document once (default) or every step")
  steps = p.add_mutually_exclusive_group()
  steps.add_argument("--epochs", type=int, help="default: 20 frozen, 3 when the encoder trains")
  steps.add_argument("--max_steps", type=int, help="optimizer steps, instead of epochs")
  p.add_argument("--batch_size", type=int, default=d.batch_size, help="global documents per step")
  p.add_argument("--device_batch_size", type=int,
                 help="documents per device per pass; smaller than batch_size/devices accumulates gradients")
  p.add_argument("--learning_rate", type=float,
                 help=f"peak learning rate; default {FROZEN_LEARNING_RATE:g} with a frozen encoder (the "
                      f"seed's), {FULL_LEARNING_RATE:g} when the encoder trains")
  for name in ("warmup_ratio", "b1", "b2", "eps", "weight_decay", "max_grad_norm"):
    p.add_argument(f"--{name}", type=float, default=getattr(d, name))
  p.add_argument("--eval_size", type=float, default=d.eval_size,
                 help="held-out documents, or a fraction when below 1")
  for name in ("seed", "max_length", "encode_tokens_per_device", "threshold", "checkpoint_every",
               "keep_checkpoints", "log_every"):
    p.add_argument(f"--{name}", type=int, default=getattr(d, name))
  p.add_argument("--row_lengths", type=lambda v: tuple(int(x) for x in v.split(",")),
                 default=d.row_lengths, help="padded token-row lengths, comma-separated")
  p.add_argument("--dtype", choices=sorted(COMPUTE), default=d.dtype,
                 help="encoder precision (model/precision.py); parameters stay float32")
  p.add_argument("--allow_pickle", action="store_true",
                 help="accept a base with only pickled PyTorch weights (unpickling runs code)")
  p.add_argument("--distributed", action="store_true",
                 help="join the other hosts (jax.distributed.initialize()) even where the TPU "
                      "runtime does not report several; it is automatic where it does")
  return p


def main(argv=None) -> int:
  p = parser()
  try:
    config = TrainConfig(**vars(p.parse_args(argv)))
  except ValueError as err:
    p.error(str(err))
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
  logging.getLogger("absl").setLevel(logging.WARNING)  # Orbax narrates every save at INFO
  from train import hosts
  if hosts.should_initialize(config.distributed):
    import jax
    jax.distributed.initialize()  # before any other JAX call; TPU slices configure themselves
    logging.info("joined %d hosts as process %d", jax.process_count(), jax.process_index())
  from model import hub
  from model.checkpoint import PickleRefused
  from train.loop import train_and_evaluate  # imports JAX; after initialize
  try:
    summary = train_and_evaluate(config)
  except (hub.ModelUnavailable, PickleRefused, FileNotFoundError) as err:
    # The user's to fix (a model or shard that is not there): the message says how; a
    # traceback would only bury it.
    logging.error("%s", err)
    return 2
  print(summary["report"]["table"])
  print(f"best step {summary['best']['step']}: macro F1 {summary['best']['macro_f1']:.3f}, "
        f"binary F1 {summary['best']['binary_f1']:.3f}; model in {summary['output']}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
