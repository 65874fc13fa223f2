"""The classifier's shape, read from (and written back to) a Hugging Face `config.json`.

The checkpoint decides the shape; command-line flags never do.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any

ARCHITECTURE = "XLMRobertaForSequenceClassification"


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  vocab_size: int  # rows of the word-embedding table (250002 for XLM-R)
  hidden_size: int  # width of every token vector (1024 for large)
  num_hidden_layers: int  # transformer blocks (24 for large)
  num_attention_heads: int  # heads per block; must divide hidden_size
  intermediate_size: int  # FFN width (4 x hidden for XLM-R)
  max_position_embeddings: int  # position table rows; usable length is this - pad_token_id - 1
  pad_token_id: int = 1  # also the offset of RoBERTa position ids
  type_vocab_size: int = 1  # token-type rows; XLM-R uses type 0 only
  layer_norm_eps: float = 1e-5  # epsilon of every LayerNorm
  hidden_act: str = "gelu"  # erf GELU, as transformers' "gelu"
  num_labels: int = 1  # outputs of the head; 1 = regression score
  # Everything else of the source config.json, kept so that export writes it back unchanged.
  extra: tuple[tuple[str, Any], ...] = ()

  def __post_init__(self):
    if self.hidden_size % self.num_attention_heads:
      raise ValueError(f"hidden_size {self.hidden_size} is not divisible by "
                       f"num_attention_heads {self.num_attention_heads}")
    if self.hidden_act not in ("gelu",):
      raise ValueError(f"hidden_act {self.hidden_act!r} is not supported (only erf 'gelu', as XLM-R)")
    if self.max_position_embeddings <= self.pad_token_id + 1:
      raise ValueError("max_position_embeddings leaves no room after the padding offset")
    if self.num_labels < 1:
      raise ValueError(f"num_labels must be >= 1, got {self.num_labels}")

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_attention_heads

  @property
  def max_length(self) -> int:
    """Longest sequence the position table allows (512 for XLM-R's 514 rows)."""
    return self.max_position_embeddings - self.pad_token_id - 1

  def check_max_length(self, max_length: int) -> None:
    if max_length > self.max_length:
      raise ValueError(f"max_length {max_length} exceeds the model's {self.max_length} positions")

  @classmethod
  def from_hf_dict(cls, hf: dict[str, Any]) -> "ModelConfig":
    model_type = hf.get("model_type", "xlm-roberta")
    if model_type not in ("xlm-roberta", "roberta"):
      raise ValueError(f"config.json has model_type {model_type!r}; koedu reads XLM-RoBERTa checkpoints")
    own = {f.name for f in dataclasses.fields(cls)} - {"extra"}
    missing = {"vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
               "intermediate_size", "max_position_embeddings"} - hf.keys()
    if missing:
      raise ValueError(f"config.json lacks {sorted(missing)}")
    kwargs = {k: hf[k] for k in own if k in hf and hf[k] is not None}
    if "num_labels" not in hf and "id2label" in hf:
      kwargs["num_labels"] = len(hf["id2label"])
    extra = tuple(sorted((k, v) for k, v in hf.items() if k not in own))
    return cls(**kwargs, extra=extra)

  def to_hf_dict(self) -> dict[str, Any]:
    hf = dict(self.extra)
    hf.update({f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"})
    hf["model_type"] = "xlm-roberta"
    hf["architectures"] = [ARCHITECTURE]
    # transformers derives num_labels from id2label; keep both consistent.
    hf["id2label"] = {str(i): f"LABEL_{i}" for i in range(self.num_labels)}
    hf["label2id"] = {f"LABEL_{i}": i for i in range(self.num_labels)}
    hf.pop("num_labels")
    if self.num_labels == 1:
      hf["problem_type"] = "regression"
    return hf

  @classmethod
  def from_json_file(cls, path_or_file) -> "ModelConfig":
    if hasattr(path_or_file, "read"):
      return cls.from_hf_dict(json.load(path_or_file))
    with open(path_or_file, encoding="utf-8") as f:
      return cls.from_hf_dict(json.load(f))

  @classmethod
  def tiny(cls, **overrides) -> "ModelConfig":
    """Small, odd sizes so that shape bugs show in tests."""
    kwargs = dict(vocab_size=1000, hidden_size=36, num_hidden_layers=3, num_attention_heads=3,
                  intermediate_size=52, max_position_embeddings=66)
    kwargs.update(overrides)
    return cls(**kwargs)
