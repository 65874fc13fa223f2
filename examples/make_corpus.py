"""(Re)generate the sample Korean web-crawl corpus under examples/corpus/.

    /work/venv/bin/python examples/make_corpus.py

Writes three shards in the three input formats the pipeline reads, with the
categories mixed across shards (document i goes to shard i % 3):

    corpus/web-00000.jsonl       JSON lines, UTF-8
    corpus/web-00001.jsonl.gz    gzip-compressed JSON lines
    corpus/web-00002.parquet     Parquet (pyarrow)

Output is byte-for-byte deterministic: gzip gets mtime=0 and no file name,
Parquet is written with fixed options, so rerunning produces identical files
(for a given pyarrow version) and a clean `git diff`.

The documents themselves live in documents_*.py next to this file.
"""
import gzip
import json
import pathlib
import sys
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.parquet as pq

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.dont_write_bytecode = True  # keep examples/ free of __pycache__

import documents_news_ads  # noqa: E402
import documents_textbook  # noqa: E402
import documents_web  # noqa: E402

OUT_DIR = HERE / "corpus"
FIELDS = ("id", "text", "url", "category")
CATEGORIES = ("textbook", "news", "ad", "forum", "boilerplate")
ALLOWED_DOMAINS = ("example.com", "example.kr")
SCHEMA = pa.schema([(name, pa.string()) for name in FIELDS])


def load_documents():
    docs = (
        documents_textbook.DOCUMENTS
        + documents_news_ads.DOCUMENTS
        + documents_web.DOCUMENTS
    )
    docs = sorted(docs, key=lambda d: d["id"])
    check(docs)
    return [{name: d[name] for name in FIELDS} for d in docs]


def check(docs):
    ids = [d["id"] for d in docs]
    assert len(set(ids)) == len(ids), "duplicate ids"
    for d in docs:
        assert set(d) == set(FIELDS), (d["id"], sorted(d))
        assert d["category"] in CATEGORIES, (d["id"], d["category"])
        host = urlparse(d["url"]).hostname or ""
        assert d["url"].startswith("https://") and host.endswith(ALLOWED_DOMAINS), d["url"]
        assert d["text"] and d["text"] == d["text"].strip(), (d["id"], "untrimmed text")


def jsonl_bytes(docs):
    lines = (json.dumps(d, ensure_ascii=False) + "\n" for d in docs)
    return "".join(lines).encode("utf-8")


def write_jsonl(docs, path):
    path.write_bytes(jsonl_bytes(docs))


def write_jsonl_gz(docs, path):
    # gzip.compress writes no file name into the header; mtime=0 pins the timestamp.
    path.write_bytes(gzip.compress(jsonl_bytes(docs), compresslevel=9, mtime=0))


def write_parquet(docs, path):
    table = pa.Table.from_pylist(docs, schema=SCHEMA)
    pq.write_table(table, path, compression="snappy")


SHARDS = (
    ("web-00000.jsonl", write_jsonl),
    ("web-00001.jsonl.gz", write_jsonl_gz),
    ("web-00002.parquet", write_parquet),
)


def main():
    docs = load_documents()
    OUT_DIR.mkdir(exist_ok=True)
    for shard_index, (name, write) in enumerate(SHARDS):
        shard = docs[shard_index :: len(SHARDS)]
        write(shard, OUT_DIR / name)
        counts = {c: sum(d["category"] == c for d in shard) for c in CATEGORIES}
        print(f"{name}: {len(shard)} documents {counts}")


if __name__ == "__main__":
    main()
