"""The published dataset's card, README.md: the YAML `datasets` reads (configs, features,
split sizes) and what a reader needs to trust the subset (classifier, threshold, counts, the
command that made it)."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.types as pat
import yaml

# Arrow's names where `datasets` (Value dtypes) names a type otherwise.
_DTYPES = {"float": "float32", "double": "float64", "halffloat": "float16", "date32[day]": "date32",
           "date64[ms]": "date64"}


def feature(t: pa.DataType) -> dict:
  """A type as `datasets` writes it in a card (Features._to_yaml_list), less the name."""
  if pat.is_struct(t):
    return {"struct": [{"name": f.name, **feature(f.type)} for f in t]}
  if pat.is_list(t) or pat.is_large_list(t):
    item = feature(t.value_type)
    key = "list" if pat.is_list(t) else "large_list"
    return {key: item["dtype"] if list(item) == ["dtype"] else item["struct"] if list(item) == ["struct"] else item}
  if pat.is_dictionary(t) or pat.is_fixed_size_list(t) or pat.is_map(t) or pat.is_union(t):
    raise TypeError(f"no card feature for {t}")  # left to `datasets` to read from the files
  return {"dtype": _DTYPES.get(str(t), str(t))}


def features(schema: pa.Schema) -> list | None:
  try:
    return [{"name": f.name, **feature(f.type)} for f in schema]
  except TypeError:
    return None


def _histogram_rows(scored: dict, published: list[int]) -> str:
  lines = ["| int_score | scored | published |", "| --- | ---: | ---: |"]
  for i in range(6):
    lines.append(f"| {i} | {scored.get(str(i), 0):,} | {published[i]:,} |")
  return "\n".join(lines)


def card(schema: pa.Schema, run: dict, files: list[dict], threshold: float, command: str) -> str:
  """README.md for the files written (their counts), from the run's _run.json + stats.json."""
  rows = sum(f["rows"] for f in files)
  published = [sum(f["int_score_histogram"][i] for f in files) for i in range(6)]
  info = {"features": features(schema), "splits": [{"name": "train", "num_examples": rows}]}
  if info["features"] is None:
    del info["features"]
  front = {"language": ["ko"], "tags": ["koedu", "educational-value"],
           "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}],
           "dataset_info": info}
  digest = run.get("weights_digest") or "unknown"
  fields = ", ".join(f"`{f.name}`" for f in schema)
  return f"""---
{yaml.safe_dump(front, sort_keys=False, allow_unicode=True)}---

# Korean educational web text (koedu, int_score >= {threshold:g})

The records of a koedu scoring run whose educational value, as scored by the classifier below,
reaches `int_score >= {threshold:g}`: {rows:,} of {run['scored']:,} scored records.

- Classifier: `{run['model']}`, revision `{run.get('model_revision') or 'unknown'}`, weights digest `{digest}`
- Threshold: `int_score >= {threshold:g}` (`int_score` is round-half-to-even of `clip(score, 0, 5)`)
- Records: {run['records_read']:,} read, {run['scored']:,} scored, {run['errored']:,} rejected, {rows:,} published
- Files: {len(files)} Parquet files under `data/`, one schema: {fields}

Every field of the records is kept, as the union of the fields of all shards; `score` (float32,
the classifier's raw output) and `int_score` are added.

## int_score histogram

{_histogram_rows(run['int_score_histogram'], published)}

## How it was made

Scored with `python -m pipeline.run` (koedu), then published with

```
{command}
```
"""
