"""The settings of `python -m pipeline.run`, declared once.

`ScoringConfig` holds every option with its default and help; the Beam `PipelineOptions` class
(and so `--help`, workers and Flex Templates) is generated from it, and `from_options` reads it
back, so an option cannot be given three different defaults in three places.
"""
from __future__ import annotations

import dataclasses
import difflib
import os

from apache_beam.options.pipeline_options import PipelineOptions

from model.hub import DEFAULT_MODEL
from model.precision import COMPUTE
from model.runner import RunnerConfig

MiB = 1 << 20


def option(default, help: str, **argparse_kwargs):
  """A field that is also a command-line option (`--<field name>`)."""
  return dataclasses.field(default=default, metadata={"help": help, "argparse": argparse_kwargs})


@dataclasses.dataclass(frozen=True)
class ScoringConfig:
  input: str | None = option(
      None, "Shards to score: GLOB[,GLOB...] of .jsonl/.json/.jsonl.gz/.jsonl.zst/.parquet, local "
      "paths, gs:// or any fsspec URL. Matched by the workers, not the launcher.")
  input_manifest: str | None = option(
      None, "Instead of --input: a text file (local, gs://, any fsspec URL) listing one shard URL a "
      "line, for crawls listed elsewhere.")
  output: str | None = option(None, "Directory for scores/, edu/, errors/, stats.json.")
  model: str = option(DEFAULT_MODEL, "Hugging Face hub id, local directory or gs:// directory of the classifier.")
  text_field: str = option("text", "Field holding the document text.")
  id_field: str = option("id", "Field holding the document id (optional per record).")
  threshold: float = option(3.0, "edu/ keeps records with int_score >= threshold.", type=float)
  batch_size: int = option(
      4096, "Records per chunk: chunk k of a shard is rows [k * N, (k + 1) * N), scored together, "
      "written as one file per output, and resumed as a whole.", type=int)
  max_length: int = option(512, "Tokens per document after truncation, <s> and </s> included.", type=int)
  dtype: str = option(
      "auto", "float32, bfloat16_3x (three bf16 matmul passes, fp32 elsewhere) or bfloat16 (one "
      "pass); auto = bfloat16 on TPUs and GPUs, float32 on CPU. See model/precision.py.",
      choices=["auto", *COMPUTE])
  tokens_per_device: int = option(16384, "Tokens in one device's share of a compiled batch.", type=int)
  max_record_bytes: int = option(
      16 * MiB, "Records larger than this go to errors/ as record_too_large, unread past the bound "
      "(a run's memory is bounded by its settings, not by its largest record).", type=int)
  unit_bytes: int = option(
      256 * MiB, "Shards larger than this are split into units of about this many (compressed) "
      "bytes, each read, scored and written by one worker: no shard is a straggler.", type=int)
  host_threads: int = option(
      0, "Threads that tokenize and pack for the device in each worker process (0: one per core).",
      type=int)
  device_retries: int = option(
      8, "Times a failed device batch is retried, with backoff (about 2 minutes in all at the "
      "default), before the run fails: a device that halts for a minute costs a minute.", type=int)
  allow_pickle: bool = option(False, "Allow pickled pytorch_model.bin weights (unpickling runs code).")
  model_cache_dir: str | None = option(
      None, "Where workers keep models fetched from gs:// (default ~/.cache/koedu/models).")
  compilation_cache_dir: str | None = option(
      None, "JAX persistent compilation cache, so reruns compile nothing (default "
      "~/.cache/koedu/jax; 'none' to disable).")
  share_model_across_processes: bool = option(
      False, "One process per machine holds the model and the device; the others read, tokenize "
      "and write, and call it (TPU workers with several SDK processes).")

  def __post_init__(self):
    if not self.output:
      raise ValueError("--output is required (python -m pipeline.run --help)")
    if bool(self.input) == bool(self.input_manifest):
      raise ValueError("give exactly one of --input GLOB[,GLOB...] and --input_manifest URL")
    if self.input is not None and not all(self.inputs):
      raise ValueError("--input needs at least one glob, and no empty ones")
    if not 0 <= self.threshold <= 5:
      raise ValueError(f"--threshold must be within the score range 0..5, got {self.threshold}")
    if self.batch_size < 1:
      raise ValueError(f"--batch_size must be positive, got {self.batch_size}")
    if self.text_field == self.id_field:
      raise ValueError("--text_field and --id_field must differ")
    if self.max_record_bytes < 1024 or self.unit_bytes < MiB:
      raise ValueError("--max_record_bytes must be at least 1024 and --unit_bytes at least 1 MiB")
    if self.host_threads < 0 or self.device_retries < 0:
      raise ValueError("--host_threads and --device_retries must be >= 0")
    self.runner_config()  # --max_length and --tokens_per_device: checked there

  @property
  def inputs(self) -> tuple[str, ...]:
    return tuple(p.strip() for p in self.input.split(",")) if self.input else ()

  @property
  def chunk_size(self) -> int:
    return self.batch_size

  @property
  def threads(self) -> int:
    return self.host_threads or os.cpu_count() or 1

  def runner_config(self) -> RunnerConfig:
    return RunnerConfig(max_length=self.max_length, tokens_per_device=self.tokens_per_device)

  @classmethod
  def from_options(cls, options: PipelineOptions) -> "ScoringConfig":
    o = options.view_as(ScoringOptions)
    values = {f.name: getattr(o, f.name) for f in dataclasses.fields(cls)}
    values["output"] = values["output"].rstrip("/") if values["output"] else None
    return cls(**values)


class ScoringOptions(PipelineOptions):
  """koedu's options as Beam parses them, from ScoringConfig's fields."""

  @classmethod
  def _add_argparse_args(cls, parser):
    # Nothing is required=True: Beam parses every PipelineOptions subclass in any process that
    # imported it (workers, other commands), and argparse would abort those; the config checks.
    for field in dataclasses.fields(ScoringConfig):
      kwargs = dict(field.metadata["argparse"])
      if isinstance(field.default, bool):
        kwargs["action"] = "store_true"
      parser.add_argument(f"--{field.name}", default=field.default, help=field.metadata["help"], **kwargs)


def unknown_flags(argv: list[str]) -> list[str]:
  """Flags no PipelineOptions class knows, each with a suggestion when one is close.

  Beam only logs a warning for these; a mistyped --threshold would then silently score with the
  default, so koedu refuses them.
  """
  options = PipelineOptions(argv)
  known = options.get_all_options()
  with_unknown = options.get_all_options(retain_unknown_options=True)
  problems = []
  for name in sorted(set(with_unknown) - set(known)):
    close = difflib.get_close_matches(name, list(known), n=1)
    problems.append(f"--{name}" + (f" (did you mean --{close[0]}?)" if close else ""))
  return problems
