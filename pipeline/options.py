"""The settings of `python -m pipeline.run`: ScoringConfig, the typed view of its options.

Each option (default, help, type) is declared once in options/catalog.py; ScoringConfig's fields
are those options, with those defaults, and the Beam `PipelineOptions` class (and so `--help`,
workers and the Flex Template) is generated from the same declarations. `from_options` reads
the parsed options back; __post_init__ checks what argparse cannot.
"""
from __future__ import annotations

import dataclasses
import difflib
import os

from apache_beam.options.pipeline_options import PipelineOptions

import options as declarations
from model.runner import RunnerConfig

MiB = 1 << 20
_DECLARED = {o.name: o for o in declarations.declared("pipeline.run")}


def option(name: str):
  """The field of option --name, with its declared default."""
  return dataclasses.field(default=declarations.declare.resolve(_DECLARED[name].default))


@dataclasses.dataclass(frozen=True)
class ScoringConfig:
  # One field per option of pipeline.run, in catalog order; help and defaults: options/catalog.py.
  input: str | None = option("input")
  input_manifest: str | None = option("input_manifest")
  output: str | None = option("output")
  model: str = option("model")
  text_field: str = option("text_field")
  id_field: str = option("id_field")
  threshold: float = option("threshold")
  batch_size: int = option("batch_size")
  max_length: int = option("max_length")
  dtype: str = option("dtype")
  tokens_per_device: int = option("tokens_per_device")
  max_record_bytes: int = option("max_record_bytes")
  unit_bytes: int = option("unit_bytes")
  host_threads: int = option("host_threads")
  device_retries: int = option("device_retries")
  allow_pickle: bool = option("allow_pickle")
  share_model_across_processes: bool = option("share_model_across_processes")
  model_cache_dir: str | None = option("model_cache_dir")
  compilation_cache_dir: str | None = option("compilation_cache_dir")
  checksum_cache_dir: str | None = option("checksum_cache_dir")
  tokenizer_cache_dir: str | None = option("tokenizer_cache_dir")
  kernel_cache_dir: str | None = option("kernel_cache_dir")

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

  def use_caches(self) -> None:
    """Points this process's caches where the options say (model/caches.py); JAX's compilation
    cache is set where JAX loads (pipeline/worker.py)."""
    from model import caches
    caches.use(models=self.model_cache_dir, checksums=self.checksum_cache_dir,
               tokenizers=self.tokenizer_cache_dir, kernels=self.kernel_cache_dir)

  def runner_config(self) -> RunnerConfig:
    return RunnerConfig(max_length=self.max_length, tokens_per_device=self.tokens_per_device)

  @classmethod
  def from_options(cls, options: PipelineOptions) -> "ScoringConfig":
    o = options.view_as(ScoringOptions)
    values = {f.name: getattr(o, f.name) for f in dataclasses.fields(cls)}
    values["output"] = values["output"].rstrip("/") if values["output"] else None
    return cls(**values)


# koedu's options as Beam parses them, from the declarations.
ScoringOptions = declarations.beam_options("pipeline.run", "ScoringOptions", __name__)


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
