"""`python -m pipeline.publish` on three shards whose records carry different fields, as users
read the result: `datasets.load_dataset(DEST)`, polars and `pyarrow.dataset`."""
from __future__ import annotations

import contextlib
import datetime
import glob
import io
import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
import yaml

from tests.checkpoints import sample_corpus_records
from tests.pipeline.conftest import MAX_LENGTH, REPO, read_scores, run_pipeline, snapshot

THRESHOLD = 3
# Small, so that the few kept records still make several files of several row groups.
SIZES = ("--max_file_bytes", "12000", "--row_group_bytes", "1000")
UTC = datetime.timezone.utc


def write_three_shards(directory: str) -> dict[tuple[str, int], dict]:
  """a.jsonl: a URL; b.jsonl: a nested `meta`, URLs null for its first two chunks (of 4);
  c.parquet: a timestamp and an int32. The texts are the sample corpus's, so scores spread."""
  texts = [r["text"] for r in sample_corpus_records().values()]
  a, b, c = texts[0::3], texts[1::3], texts[2::3]
  records = {}
  path = os.path.join(directory, "a.jsonl")
  rows = [{"id": f"a{i}", "text": t, "url": f"https://example.kr/a/{i}"} for i, t in enumerate(a)]
  with open(path, "w", encoding="utf-8") as f:
    f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
  records.update({(path, i): r for i, r in enumerate(rows)})
  path = os.path.join(directory, "b.jsonl")
  rows = [{"id": f"b{i}", "text": t, "url": None if i < 8 else f"https://example.kr/b/{i}",
           "meta": {"lang": "ko", "year": 2000 + i, "tags": ["x"] * (i % 3)}} for i, t in enumerate(b)]
  with open(path, "w", encoding="utf-8") as f:
    f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
  records.update({(path, i): r for i, r in enumerate(rows)})
  path = os.path.join(directory, "c.parquet")
  fetched = [datetime.datetime(2024, 1, 1, tzinfo=UTC) + datetime.timedelta(hours=i) for i in range(len(c))]
  table = pa.table({"id": [f"c{i}" for i in range(len(c))], "text": c,
                    "fetched": pa.array(fetched, pa.timestamp("ms", tz="UTC")),
                    "n": pa.array(range(len(c)), pa.int32())})
  pq.write_table(table, path)
  records.update({(path, i): r for i, r in enumerate(table.to_pylist())})
  return records


def publish(*args: str, env: dict | None = None, module: str = "pipeline.publish") -> subprocess.CompletedProcess:
  """`python -m <module> args` as a process of its own (a kill must not take the tests along)."""
  return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True,
                        env=dict(os.environ, PYTHONPATH=REPO, **(env or {})), timeout=300)


def publish_here(*args: str) -> subprocess.CompletedProcess:
  """pipeline.publish's main in this process: the same job, without a new interpreter's start."""
  from pipeline.publish import main
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    code = main(list(args))
  return subprocess.CompletedProcess(["pipeline.publish", *args], code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def three_shard_run(spread_model, tmp_path_factory):
  """(records by (source, row), the scoring run's output, a first publish's DEST, its process)."""
  shards = str(tmp_path_factory.mktemp("three_shards"))
  records = write_three_shards(shards)
  output = str(tmp_path_factory.mktemp("run"))
  run_pipeline("--input", os.path.join(shards, "*"), "--output", output, "--model", spread_model,
               "--max_length", str(MAX_LENGTH), "--threshold", str(THRESHOLD), "--batch_size", "4")
  dest = str(tmp_path_factory.mktemp("published"))
  proc = publish_here("--output", output, "--dataset", dest, *SIZES)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return records, output, dest, proc


def expected_rows(records: dict, output: str, threshold: float) -> dict[str, dict]:
  """id -> the record as read, plus its score and int_score from scores/: what must be published."""
  kept = {}
  for s in read_scores(output):
    if s["int_score"] >= threshold:
      kept[s["id"]] = {**records[(s["source"], s["row"])], "score": s["score"], "int_score": s["int_score"]}
  return kept


def same(got: dict, want: dict, columns: list[str]) -> None:
  """Every column of the published row; the fields the record lacks are null."""
  for name in columns:
    value, expected = got[name], want.get(name)
    if isinstance(value, datetime.datetime) and value.tzinfo is None:
      value = value.replace(tzinfo=UTC)  # polars and datasets may drop the zone on the way out
    assert value == expected, (want["id"], name, value, expected)


def test_three_shards_read_whole_by_datasets_polars_and_pyarrow(three_shard_run, tmp_path, monkeypatch):
  monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  import datasets
  import polars as pl

  records, output, dest, proc = three_shard_run
  want = expected_rows(records, output, THRESHOLD)
  assert {w["id"][0] for w in want.values()} == {"a", "b", "c"}, "each shard should keep some records"
  files = sorted(glob.glob(os.path.join(dest, "data", "*.parquet")))
  assert len(files) >= 3
  assert [os.path.basename(f) for f in files] == [f"train-{i:05d}-of-{len(files):05d}.parquet"
                                                  for i in range(len(files))]
  schema = pq.read_schema(files[0])
  assert all(pq.read_schema(f).equals(schema) for f in files), "one schema for every file"
  assert schema.names == ["id", "text", "url", "meta", "fetched", "n", "score", "int_score"]
  assert schema.field("meta").type == pa.struct([("lang", pa.string()), ("year", pa.int64()),
                                                 ("tags", pa.list_(pa.string()))])
  assert sum(pq.ParquetFile(f).metadata.num_row_groups for f in files) > len(files)
  # The raw output is lossless too: a chunk whose URLs are all null keeps the column, typed null.
  b_chunks = [pq.read_schema(p) for p in glob.glob(os.path.join(output, "edu", "b.jsonl-*.parquet"))]
  assert any(s.field("url").type == pa.null() for s in b_chunks if "url" in s.names)

  loaded = datasets.load_dataset(dest, split="train", cache_dir=str(tmp_path / "hf"))
  readers = {"datasets": loaded.to_list(),
             "polars": pl.read_parquet(os.path.join(dest, "data", "*.parquet")).to_dicts(),
             "pyarrow.dataset": pads.dataset(os.path.join(dest, "data")).to_table().to_pylist()}
  assert loaded.column_names == schema.names
  for reader, rows in readers.items():
    ids = [r["id"] for r in rows]
    assert sorted(ids) == sorted(want), reader  # every kept record, once
    for row in rows:
      same(row, want[row["id"]], schema.names)
  assert readers["pyarrow.dataset"] == pq.read_table(files[0]).to_pylist() + [
      r for f in files[1:] for r in pq.read_table(f).to_pylist()], "rows in file order"

  card = open(os.path.join(dest, "README.md"), encoding="utf-8").read()
  front = yaml.safe_load(card.split("---\n")[1])
  assert front["dataset_info"]["features"] == datasets.Features.from_arrow_schema(schema)._to_yaml_list()
  assert front["dataset_info"]["splits"] == [{"name": "train", "num_examples": len(want)}]
  stats = json.loads(open(os.path.join(output, "stats.json")).read())
  assert stats["weights_digest"] in card and "int_score >= 3" in card
  assert f"python -m pipeline.publish --output {output} --dataset {dest}" in card
  for i in range(6):
    published = sum(w["int_score"] == i for w in want.values())
    assert f"| {i} | {stats['int_score_histogram'][str(i)]:,} | {published:,} |" in card
  assert f"{len(want)} records" in proc.stdout


def test_republish_changes_no_byte_and_a_dry_run_lists_the_upload(three_shard_run):
  _, output, dest, _ = three_shard_run
  before = snapshot(dest)
  proc = publish_here("--output", output, "--dataset", dest, *SIZES, "--push_to_hub", "koedu/ko-edu", "--dry_run")
  assert proc.returncode == 0, proc.stderr[-3000:]
  after = snapshot(dest)
  data = [k for k in before if k.startswith("data")]
  assert {k: after[k] for k in data} == {k: before[k] for k in data}, "data files rewritten"
  assert {k: v[1] for k, v in after.items()} == {k: v[1] for k, v in before.items()}
  listed = [line.split()[0] for line in proc.stdout.splitlines() if line.startswith("  ")]
  assert listed == ["README.md"] + [f"data/{n}" for n in sorted(os.listdir(os.path.join(dest, "data")))]
  assert "to the dataset repo koedu/ko-edu" in proc.stdout and "nothing was uploaded" in proc.stdout


def test_killed_publish_resumes_to_the_same_bytes(three_shard_run, tmp_path):
  _, output, dest, _ = three_shard_run
  again = str(tmp_path / "again")
  args = ["--output", output, "--dataset", f"faulty://{again}", *SIZES]
  killed = publish(*args, module="tests.pipeline.inject_faults",
                   env={"KOEDU_FAULTS": json.dumps({"entry": "pipeline.publish", "kill_before": "/data/train-",
                                                    "kill_on": 2})})
  assert killed.returncode == -9, killed.stderr[-3000:]
  assert len(os.listdir(os.path.join(again, "data"))) == 1 and not os.path.exists(os.path.join(again, "README.md"))
  done_before = snapshot(os.path.join(again, "data"))
  import fsspec
  from tests.pipeline.inject_faults import FaultyFileSystem
  fsspec.register_implementation("faulty", FaultyFileSystem, clobber=True)  # no faults: the rerun
  proc = publish_here(*args)
  assert proc.returncode == 0, proc.stderr[-3000:]
  first, second = snapshot(dest), snapshot(again)
  assert {f"data/{k}": v for k, v in done_before.items()}.items() <= second.items(), "the file written before the kill was redone"
  assert {k: v[1] for k, v in second.items() if k.startswith("data")} == \
         {k: v[1] for k, v in first.items() if k.startswith("data")}
  assert second["README.md"][1].decode().replace(f"faulty://{again}", dest) == first["README.md"][1].decode()


def test_another_threshold_from_scores_without_the_model(three_shard_run, tmp_path):
  records, output, first, _ = three_shard_run
  # At the run's own threshold, rebuilt from scores/ and the shards: the bytes the summaries give.
  proc = publish_here("--output", output, "--dataset", str(tmp_path / "t3"), *SIZES, "--from_scores")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert {k: v[1] for k, v in snapshot(str(tmp_path / "t3" / "data")).items()} == \
         {k: v[1] for k, v in snapshot(os.path.join(first, "data")).items()}

  dest = str(tmp_path / "t4")
  proc = publish_here("--output", output, "--dataset", dest, "--threshold", "4")
  assert proc.returncode == 0, proc.stderr[-3000:]
  want = expected_rows(records, output, 4)
  rows = pads.dataset(os.path.join(dest, "data")).to_table().to_pylist()
  assert 0 < len(rows) == len(want) and sorted(r["id"] for r in rows) == sorted(want)
  columns = pq.read_schema(glob.glob(os.path.join(dest, "data", "*.parquet"))[0]).names
  for row in rows:
    same(row, want[row["id"]], columns)


def test_an_unfinished_run_or_an_unknown_option_is_refused(tmp_path):
  proc = publish_here("--output", str(tmp_path), "--dataset", str(tmp_path / "d"), "--max_file_size", "9")
  assert proc.returncode == 2 and "unknown option --max_file_size" in proc.stderr
  proc = publish_here("--output", str(tmp_path), "--dataset", str(tmp_path / "d"))
  assert proc.returncode == 2 and "holds no scoring run" in proc.stderr
  (tmp_path / "_run.json").write_text("{}")
  proc = publish_here("--output", str(tmp_path), "--dataset", str(tmp_path / "d"))
  assert proc.returncode == 2 and "is not finished (no stats.json)" in proc.stderr


def test_a_type_conflict_is_refused_by_field_types_and_shards(spread_model, tmp_path):
  texts = [r["text"] for r in sample_corpus_records().values()][:4]
  shards = {"x.jsonl": [2020, 2021], "y.jsonl": ["2020년", "2021년"]}
  for name, years in shards.items():
    with open(tmp_path / name, "w", encoding="utf-8") as f:
      f.writelines(json.dumps({"id": f"{name}{i}", "text": texts[i], "year": y}, ensure_ascii=False) + "\n"
                   for i, y in enumerate(years))
  output = str(tmp_path / "run")
  run_pipeline("--input", str(tmp_path / "*.jsonl"), "--output", output, "--model", spread_model,
               "--max_length", str(MAX_LENGTH), "--threshold", "0", "--batch_size", "4")
  proc = publish_here("--output", output, "--dataset", str(tmp_path / "dest"))
  assert proc.returncode == 2, proc.stderr[-3000:]
  x, y = str(tmp_path / "x.jsonl"), str(tmp_path / "y.jsonl")
  assert (f"field 'year' is int64 in {x} and string in {y}" in proc.stderr or
          f"field 'year' is string in {y} and int64 in {x}" in proc.stderr), proc.stderr
  assert not os.path.exists(tmp_path / "dest" / "data"), "nothing is written before the schema is known"


def test_publish_to_gcs_gives_the_local_bytes(three_shard_run, tmp_path):
  """DEST on a real GCS server (the emulator): files put whole, markers, listing, the card."""
  import fsspec

  from tests import gcs
  _, output, first, _ = three_shard_run
  with gcs.emulator():
    dest = f"gs://{gcs.BUCKET}/published"
    proc = publish_here("--output", output, "--dataset", dest, *SIZES)
    assert proc.returncode == 0, proc.stderr[-3000:]
    fs = fsspec.filesystem("gs", use_listings_cache=False, skip_instance_cache=True)
    local = snapshot(first)
    names = sorted(p.split("/published/", 1)[1] for p in fs.find(dest) if "/.koedu/" not in p)
    assert names == sorted(k for k in local if not k.startswith(".koedu"))
    for name in names:
      if name.startswith("data/"):
        assert fs.cat_file(f"{dest}/{name}") == local[name][1], name
    assert fs.cat_file(f"{dest}/README.md").decode() == local["README.md"][1].decode().replace(first, dest)
