"""One schema for records whose fields differ from chunk to chunk: the union of their fields,
types promoted only where no value can change, and a table brought to that schema.

Promotions: null to anything; an integer to a wider one (or unsigned to a wider signed one); a
float to a wider float; string to large_string, binary to large_binary, list to large_list; a
timestamp, time or duration to a finer unit of the same kind (and time zone); a decimal to one
with at least both precisions' integer and fraction digits; a struct to the union of both
structs' fields, field by field; a list's items as any other type. Anything else (int64 beside
double, string beside int64) is a conflict: `SchemaConflict` names the field, both types and a
shard holding each.
"""
from __future__ import annotations

import base64

import pyarrow as pa
import pyarrow.types as pat

from pipeline.faults import UsageError

_UNITS = ("s", "ms", "us", "ns")


class SchemaConflict(UsageError):
  """Two chunks hold a field with types no lossless promotion joins: the user's to fix."""


def encode(schema: pa.Schema) -> str:
  """The schema as text for a JSON summary: Arrow's own serialization, so nothing is lost."""
  return base64.b64encode(schema.serialize().to_pybytes()).decode("ascii")


def decode(text: str) -> pa.Schema:
  return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))


class Clash(Exception):
  def __init__(self, path: str, left: pa.DataType, right: pa.DataType):
    super().__init__(path)
    self.path, self.left, self.right = path, left, right


def _integer(a: pa.DataType, b: pa.DataType) -> pa.DataType | None:
  signed_a, signed_b = pat.is_signed_integer(a), pat.is_signed_integer(b)
  if signed_a == signed_b:
    return a if a.bit_width >= b.bit_width else b
  signed, unsigned = (a, b) if signed_a else (b, a)
  if signed.bit_width > unsigned.bit_width:
    return signed
  return {8: pa.int16(), 16: pa.int32(), 32: pa.int64()}.get(unsigned.bit_width)  # uint64: none


def _finer(a, b, make):
  return make(a.unit if _UNITS.index(a.unit) >= _UNITS.index(b.unit) else b.unit)


def _promote(a: pa.DataType, b: pa.DataType, path: str, order: dict) -> pa.DataType:
  """The type both a and b convert to without loss; Clash if there is none."""
  if a.equals(b) and not pat.is_struct(a):
    return a
  if pat.is_null(a) or pat.is_null(b):
    return b if pat.is_null(a) else a
  if pat.is_struct(a) and pat.is_struct(b):
    return pa.struct(_union_fields(list(a), list(b), path + ".", order))
  if _is_list(a) and _is_list(b):
    item = _promote(a.value_type, b.value_type, path + "[]", order)
    return pa.list_(item) if pat.is_list(a) and pat.is_list(b) else pa.large_list(item)
  if pat.is_integer(a) and pat.is_integer(b):
    found = _integer(a, b)
    if found is not None:
      return found
  elif pat.is_floating(a) and pat.is_floating(b):
    return a if a.bit_width >= b.bit_width else b
  elif {str(a), str(b)} in ({"string", "large_string"}, {"binary", "large_binary"}):
    return a if str(a).startswith("large") else b
  elif pat.is_timestamp(a) and pat.is_timestamp(b) and a.tz == b.tz:
    return _finer(a, b, lambda unit: pa.timestamp(unit, a.tz))
  elif pat.is_duration(a) and pat.is_duration(b):
    return _finer(a, b, pa.duration)
  elif pat.is_time(a) and pat.is_time(b):
    return _finer(a, b, lambda unit: pa.time32(unit) if unit in ("s", "ms") else pa.time64(unit))
  elif pat.is_decimal(a) and pat.is_decimal(b):
    scale = max(a.scale, b.scale)
    precision = max(a.precision - a.scale, b.precision - b.scale) + scale
    if precision <= 76:
      return pa.decimal128(precision, scale) if precision <= 38 else pa.decimal256(precision, scale)
  raise Clash(path, a, b)


def _union_fields(a: list[pa.Field], b: list[pa.Field], prefix: str, order: dict) -> list[pa.Field]:
  """Fields of both, each promoted; ordered by `order` (path -> sort key) where it has them,
  so that the result does not depend on which side came first."""
  right = {f.name: f for f in b}
  merged = {}
  for f in a:
    merged[f.name] = f.with_type(_promote(f.type, right[f.name].type, prefix + f.name, order)) \
        if f.name in right else f
  for f in b:
    merged.setdefault(f.name, f)
  fields = [f.with_nullable(True) for f in merged.values()]
  return sorted(fields, key=lambda f: (order.get(prefix + f.name, ()), f.name))


def _is_list(t: pa.DataType) -> bool:
  return pat.is_list(t) or pat.is_large_list(t)


def paths(fields) -> dict[str, pa.DataType]:
  """Every field of a schema, nested ones too, by its path (`meta.year`, `tags[]`), with its type."""
  found = {}

  def walk(t: pa.DataType, path: str) -> None:
    found[path] = t
    if _is_list(t):
      walk(t.value_type, path + "[]")
    elif pat.is_struct(t):
      for f in t:
        walk(f.type, f"{path}.{f.name}")
  for f in fields:
    walk(f.type, f.name)
  return found


def union(a: pa.Schema, b: pa.Schema, order: dict) -> pa.Schema:
  """Both schemas' fields, promoted; raises Clash(path, type in a, type in b)."""
  return pa.schema(_union_fields(list(a), list(b), "", order))


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
  """The table with the schema's columns, in its order: missing ones null, the others cast."""
  columns = [_conform(table.column(f.name).combine_chunks(), f.type) if f.name in table.column_names
             else pa.nulls(table.num_rows, f.type) for f in schema]
  return pa.Table.from_arrays(columns, schema=schema)


def _conform(array: pa.Array, target: pa.DataType) -> pa.Array:
  if array.type.equals(target):
    return array
  if pat.is_struct(target) and pat.is_struct(array.type):
    names = {array.type.field(i).name: i for i in range(array.type.num_fields)}
    children = [_conform(array.field(names[f.name]), f.type) if f.name in names
                else pa.nulls(len(array), f.type) for f in target]
    return pa.StructArray.from_arrays(children, fields=list(target), mask=array.is_null())
  if _is_list(target) and _is_list(array.type):
    offsets = array.offsets.cast(pa.int64() if pat.is_large_list(target) else pa.int32())
    values = _conform(array.values, target.value_type)
    make = pa.LargeListArray if pat.is_large_list(target) else pa.ListArray
    return make.from_arrays(offsets, values, type=target, mask=array.is_null())
  return array.cast(target)  # safe casts only: the promotions above change no value
