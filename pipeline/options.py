"""The command line of `python -m pipeline.run`, and the validated run configuration it yields."""
from __future__ import annotations

import dataclasses

from apache_beam.options.pipeline_options import PipelineOptions

from model.hub import DEFAULT_MODEL
from model.precision import COMPUTE


class ScoringOptions(PipelineOptions):

  @classmethod
  def _add_argparse_args(cls, parser):
    # Not required=True: Beam parses every PipelineOptions subclass in any process that imported
    # it (workers, other commands), and argparse would abort those; from_options checks instead.
    parser.add_argument("--input",
                        help="Shards to score: GLOB[,GLOB...] of .jsonl/.json/.jsonl.gz/.jsonl.zst/.parquet, "
                             "local paths, gs:// or any fsspec URL.")
    parser.add_argument("--output", help="Directory for scores/, edu/, errors/, stats.json.")
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="Hugging Face hub id, local directory or gs:// directory of the classifier.")
    parser.add_argument("--text_field", default="text", help="Field holding the document text.")
    parser.add_argument("--id_field", default="id", help="Field holding the document id (optional per record).")
    parser.add_argument("--threshold", type=float, default=3,
                        help="edu/ keeps records with int_score >= threshold.")
    parser.add_argument("--batch_size", type=int, default=4096,
                        help="Records per chunk: the unit that is scored at once (the scorer packs its "
                             "documents into rows), written as one file per output, and resumed.")
    parser.add_argument("--max_length", type=int, default=512, help="Tokens per document after truncation.")
    parser.add_argument("--dtype", default="auto", choices=["auto", *COMPUTE],
                        help="float32, bfloat16_3x (three bf16 matmul passes, fp32 elsewhere) or "
                             "bfloat16 (one pass); auto = bfloat16_3x on TPU, float32 elsewhere. "
                             "See model/precision.py.")
    parser.add_argument("--tokens_per_device", type=int, default=16384,
                        help="Tokens in one device's share of a compiled batch.")
    parser.add_argument("--allow_pickle", action="store_true",
                        help="Allow pickled pytorch_model.bin weights (unpickling runs code).")
    parser.add_argument("--model_cache_dir", default=None,
                        help="Where workers keep models fetched from gs:// (default ~/.cache/koedu/models).")
    parser.add_argument("--compilation_cache_dir", default=None,
                        help="JAX persistent compilation cache, so reruns compile nothing "
                             "(default ~/.cache/koedu/jax; 'none' to disable).")
    parser.add_argument("--share_model_across_processes", action="store_true",
                        help="One process per machine holds the model (needed on TPU workers with "
                             "several SDK processes; a TPU opens in one process only).")


@dataclasses.dataclass(frozen=True)
class ScoringConfig:
  inputs: tuple[str, ...]  # glob patterns as given
  output: str  # output directory (local or URL)
  model: str  # hub id, directory or URL
  text_field: str  # field with the document text
  id_field: str  # field with the document id
  threshold: float  # edu/ keeps int_score >= threshold
  batch_size: int  # records per chunk: scored together, written together, resumed together
  max_length: int  # tokens per document after truncation
  dtype: str  # "auto" or a key of model.precision.COMPUTE
  tokens_per_device: int  # tokens per device per compiled batch
  allow_pickle: bool  # accept pytorch_model.bin
  model_cache_dir: str | None  # worker-side cache of remote models
  compilation_cache_dir: str | None  # JAX persistent compilation cache
  share_model_across_processes: bool  # one model per machine, served to every process

  def __post_init__(self):
    if not self.inputs or not all(self.inputs):
      raise ValueError("--input needs at least one glob")
    if not 0 <= self.threshold <= 5:
      raise ValueError(f"--threshold must be within the score range 0..5, got {self.threshold}")
    if self.batch_size < 1:
      raise ValueError(f"--batch_size must be positive, got {self.batch_size}")
    if not 3 <= self.max_length:
      raise ValueError(f"--max_length must be at least 3 (<s>, one token, </s>), got {self.max_length}")
    if self.text_field == self.id_field:
      raise ValueError("--text_field and --id_field must differ")

  @property
  def chunk_size(self) -> int:
    return self.batch_size

  @classmethod
  def from_options(cls, options: PipelineOptions) -> "ScoringConfig":
    o = options.view_as(ScoringOptions)
    missing = [f"--{name}" for name in ("input", "output") if not getattr(o, name)]
    if missing:
      raise ValueError(f"{' and '.join(missing)} required (python -m pipeline.run --help)")
    return cls(inputs=tuple(p.strip() for p in o.input.split(",")), output=o.output.rstrip("/"),
               model=o.model, text_field=o.text_field, id_field=o.id_field,
               threshold=o.threshold, batch_size=o.batch_size, max_length=o.max_length,
               dtype=o.dtype, tokens_per_device=o.tokens_per_device, allow_pickle=o.allow_pickle,
               model_cache_dir=o.model_cache_dir, compilation_cache_dir=o.compilation_cache_dir,
               share_model_across_processes=o.share_model_across_processes)


def unknown_flags(argv: list[str]) -> list[str]:
  """Flags no PipelineOptions class knows, each with a suggestion when one is close.

  Beam only logs a warning for these; a mistyped --threshold would then silently score with the
  default, so koedu refuses them.
  """
  import difflib

  from apache_beam.options.pipeline_options import _BeamArgumentParser
  parser = _BeamArgumentParser(allow_abbrev=False)
  for cls in {str(c): c for c in PipelineOptions.__subclasses__()}.values():
    cls._add_argparse_args(parser)
  _, unknown = parser.parse_known_args(argv)
  known = [opt for action in parser._actions for opt in action.option_strings]
  problems = []
  for arg in unknown:
    if arg.startswith("--"):
      name = arg.split("=", 1)[0]
      close = difflib.get_close_matches(name, known, n=1)
      problems.append(f"{name}" + (f" (did you mean {close[0]}?)" if close else ""))
  return problems
