"""Everything before the first step: the base model, the data and its report, the split, the
tokens, and (with a frozen encoder) the cached features.

A resumed run does all of this again rather than storing features: it is deterministic, and one
encoder pass costs less than keeping (documents x hidden) floats beside the checkpoints.
"""
from __future__ import annotations

import dataclasses
import json
import logging

import jax
import numpy as np

from model import convert, hub, runtime as runtimes
from model.recipe import int_scores
from model.tokenize import DocumentTokenizer
from model.xlmr import XLMRobertaClassifier
from model import placement
from train import agreement, base, data, features
from train.config import TrainConfig
from train.export import Output

log = logging.getLogger(__name__)
DATA_REPORT, BAD_ROWS = "data_report.json", "bad_rows.jsonl"
TOKENIZE_CHUNK = 65536  # documents per tokenizer call, for progress lines on large corpora


@dataclasses.dataclass
class Prepared:
  model_dir: str  # local copy of the base; its tokenizer is exported with the model
  base: base.Base
  model: XLMRobertaClassifier  # the base, built to train (fp32 parameters, differentiable attention), on the host
  runtime: runtimes.Runtime  # how `model` runs: precision, attention, the mesh
  train: data.Examples
  eval: data.Examples
  train_inputs: object  # cached features (documents, hidden), or token ids per document
  eval_inputs: object
  data: dict  # agreement.fingerprint of train and eval, the same on every host
  precision: dict  # what each pass ran at, and what scoring will: for the reports


def split(config: TrainConfig) -> tuple[data.Examples, data.Examples, data.DataReport]:
  report = data.DataReport()
  examples, report = data.read(config.data, config.text_field, config.label_field, report)
  if config.eval_data:
    held_out, report = data.read(config.eval_data, config.text_field, config.label_field, report)
    train = examples
  else:
    if not len(examples.texts):
      train = held_out = examples
    else:
      train_index, eval_index = data.stratified_split(examples.labels, config.eval_size, config.seed)
      train, held_out = examples.take(train_index), examples.take(eval_index)
  if not len(train.texts) or not len(held_out.texts):
    raise ValueError(f"no usable documents to train or evaluate on: {report.summary()}")
  return train, held_out, report


def write_data_report(output: Output, report: data.DataReport, train, held_out) -> dict:
  histogram = lambda ex: {str(k): int(v) for k, v in zip(*np.unique(int_scores(ex.labels), return_counts=True))}
  summary = {**report.summary(), "train": len(train.texts), "eval": len(held_out.texts),
             "train_int_scores": histogram(train), "eval_int_scores": histogram(held_out)}
  if placement.is_primary():
    output.write(DATA_REPORT, json.dumps(summary, indent=2).encode())
    output.write(BAD_ROWS, "".join(r.to_json() + "\n" for r in report.bad_rows).encode())
  if summary["bad"]:
    log.warning("%d bad rows, not used (%s); each is listed in %s", summary["bad"],
                summary["bad_by_reason"], output.path(BAD_ROWS))
  log.info("data: %s", summary)
  return summary


def tokenize(tokenizer: DocumentTokenizer, texts: list[str]) -> list[np.ndarray]:
  ids = []
  for start in range(0, len(texts), TOKENIZE_CHUNK):
    ids += tokenizer(texts[start:start + TOKENIZE_CHUNK]).ids
    if len(texts) > TOKENIZE_CHUNK:
      log.info("tokenized %d of %d documents", len(ids), len(texts))
  return ids


def prepare(config: TrainConfig, mesh, output: Output) -> tuple[Prepared, dict]:
  # Data first: a wrong glob or field fails in seconds, not after downloading 2 GB of weights.
  train, held_out, report = split(config)
  fingerprint = agreement.fingerprint(train, held_out)
  agreement.check_hosts(fingerprint)
  summary = write_data_report(output, report, train, held_out)
  model_dir = hub.fetch(hub.describe(config.model, allow_pickle=config.allow_pickle))
  start = base.load(model_dir, config.seed, config.allow_pickle)
  start.config.check_max_length(config.max_length)
  devices = list(mesh.devices.flat)
  training = runtimes.resolve(start.config, config.dtype, devices=devices, training=True)
  # Built in host memory: the steps place its parameters split over the devices (FSDP), and a
  # whole copy on the first accelerator would cost as much as the Adam state saves.
  with jax.default_device(jax.local_devices(backend="cpu")[0]):
    model = convert.model_from_params(start.config, start.params, **training.model_kwargs())
  tokenizer = DocumentTokenizer(model_dir, config.max_length)
  train_ids, eval_ids = tokenize(tokenizer, train.texts), tokenize(tokenizer, held_out.texts)
  # What `pipeline.run` will score the exported model at, on this platform unless told.
  scoring = runtimes.resolve(start.config, config.score_dtype, devices=devices)
  precision = {"scoring": scoring.precision, "training": training.precision}
  if config.cached:
    # The frozen encoder only runs forward, as the scorer runs it and at its precision: the
    # head is fit, and evaluated, on the features production computes (bf16 on TPU, not fp32).
    frozen = convert.model_from_params(start.config, start.params, **scoring.model_kwargs())
    encode = lambda ids: features.encode(frozen, ids, scoring, config.runner_config())
    train_inputs, eval_inputs = encode(train_ids), encode(eval_ids)
    precision.update(features=scoring.precision, evaluated=scoring.precision)
  else:
    train_inputs, eval_inputs = train_ids, eval_ids
    precision.update(evaluated=training.precision)
  log.info("precision: %s", precision)
  return Prepared(model_dir, start, model, training, train, held_out, train_inputs, eval_inputs,
                  fingerprint, precision), summary
