"""The CPU engines people score with, loaded as bench.reference measures them and as a plain
script of theirs would: transformers + PyTorch, ONNX Runtime (exported and fused), OpenVINO.

    python -m bench.engines --engine openvino-throughput --size base --input SHARD.jsonl --output OUT.parquet

run as a script, reads a JSON-lines shard, scores it in length-sorted batches of 16 and writes
the scores: what bench.pipeline times as a whole process beside `python -m pipeline.run`.
Conversions are made once per checkpoint and kept in the bench directory.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

from bench import common

PREFIX = "passage: "


# ---------------------------------------------------------------------------- conversion

def converted_dir(size: str) -> str:
  return os.path.join(common.BENCH_DIR, "converted", f"xlmr-{size}")


def _checkpoint_stamp(model_dir: str) -> list:
  st = os.stat(os.path.join(model_dir, "model.safetensors"))
  return [st.st_size, st.st_mtime_ns]


def conversion(size: str, engine: str) -> dict | None:
  """What `convert` stored for this checkpoint, or None if it must be (re)done."""
  path = os.path.join(converted_dir(size), f"{engine}.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    meta = json.load(f)
  return meta if meta.get("checkpoint") == _checkpoint_stamp(common.checkpoint(size)) else None


def convert(size: str, engine: str) -> dict:
  """ONNX (exported, then optimized) or OpenVINO IR of the checkpoint, timed, in this process."""
  import torch
  from transformers import AutoModelForSequenceClassification, AutoTokenizer
  model_dir = common.checkpoint(size)
  out = converted_dir(size)
  os.makedirs(out, exist_ok=True)
  tokenizer = AutoTokenizer.from_pretrained(model_dir)
  example = tokenizer([PREFIX + t for t in common.documents(2)], padding="longest", truncation=True,
                      max_length=common.MAX_LENGTH, return_tensors="pt")
  example = {"input_ids": example["input_ids"], "attention_mask": example["attention_mask"]}
  meta = {"checkpoint": _checkpoint_stamp(model_dir), "torch": torch.__version__}
  if engine == "onnxruntime":
    import onnxruntime
    from onnxruntime.transformers import optimizer
    # Eager attention: the exported matmul/softmax pattern is what the optimizer fuses into its
    # Attention op (SDPA exports as one opaque pattern it does not recognise).
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, attn_implementation="eager").eval()
    raw = os.path.join(out, "raw", "model.onnx")
    os.makedirs(os.path.dirname(raw), exist_ok=True)
    start = time.perf_counter()
    axes = {"batch": 0, "sequence": 1}
    with torch.inference_mode():
      torch.onnx.export(model, (example["input_ids"], example["attention_mask"]), raw,
                        input_names=["input_ids", "attention_mask"], output_names=["logits"],
                        dynamic_axes={"input_ids": {v: k for k, v in axes.items()},
                                      "attention_mask": {v: k for k, v in axes.items()},
                                      "logits": {0: "batch"}},
                        opset_version=17, dynamo=False)
    meta["export_seconds"] = time.perf_counter() - start
    start = time.perf_counter()
    optimized = optimizer.optimize_model(raw, model_type="bert", num_heads=model.config.num_attention_heads,
                                         hidden_size=model.config.hidden_size)
    optimized.save_model_to_file(os.path.join(out, "model.onnx"), use_external_data_format=True,
                                 all_tensors_to_one_file=True)
    meta["optimize_seconds"] = time.perf_counter() - start
    meta["convert_seconds"] = meta["export_seconds"] + meta["optimize_seconds"]
    meta["fusions"] = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
    meta["onnxruntime"] = onnxruntime.__version__
    for name in os.listdir(os.path.dirname(raw)):
      os.unlink(os.path.join(os.path.dirname(raw), name))
  else:
    import openvino as ov
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    start = time.perf_counter()
    ov_model = ov.convert_model(model, example_input=example)  # inputs stay dynamic: [?, ?]
    meta["convert_seconds"] = time.perf_counter() - start
    # compress_to_fp16 defaults to True, which would store the fp32 weights in fp16.
    ov.save_model(ov_model, os.path.join(out, "openvino.xml"), compress_to_fp16=False)
    meta["inputs"] = [f"{i.get_any_name()} {i.get_element_type()} {i.get_partial_shape()}" for i in ov_model.inputs]
    meta["openvino"] = ov.__version__
  with open(os.path.join(out, f"{engine}.json"), "w") as f:
    json.dump(meta, f, indent=1)
  return meta


def ensure_converted(size: str, engine: str) -> dict:
  """The stored conversion, made first in a child process (its memory is not the engine's)."""
  if engine == "transformers":
    return {}
  base = "onnxruntime" if engine == "onnxruntime" else "openvino"
  meta = conversion(size, base)
  if meta is None:
    common.log(f"converting the {size} checkpoint for {base} (once)")
    subprocess.run([sys.executable, "-m", "bench.engines", "--convert", f"{size}:{base}"],
                   check=True, cwd=common.REPO)
    meta = conversion(size, base)
  return meta


# ---------------------------------------------------------------------------- engines

def batches(ids: list[list[int]], order: str, batch: int) -> list[list[int]]:
  n = len(ids)
  if order == "arrival":
    return [list(range(i, min(n, i + batch))) for i in range(0, n, batch)]
  by_length = np.argsort([len(x) for x in ids], kind="stable")
  return [by_length[i:i + batch].tolist() for i in range(0, n, batch)]


def openvino_precisions(compiled) -> dict:
  """Runtime precision of the compiled graph's weight matmuls (FullyConnected nodes; attention
  is one fused Snippets "Subgraph" node per layer, whose recorded precision is its mask's)."""
  counts: dict = {}
  for op in compiled.get_runtime_model().get_ordered_ops():
    info = op.get_rt_info()
    kind = info["layerType"].astype(str) if "layerType" in info else op.get_type_name()
    if kind in ("FullyConnected", "MatMul") and "runtimePrecision" in info:
      key = f"{kind} {info['runtimePrecision'].astype(str)}"
      counts[key] = counts.get(key, 0) + 1
  return counts


def load(size: str, engine: str, threads: int):
  """(infer, queue, extra): infer(enc) -> scores for the synchronous engines; for OpenVINO's
  THROUGHPUT hint an AsyncInferQueue instead; extra describes what was loaded."""
  model_dir = common.checkpoint(size)
  extra: dict = {}
  queue = None
  if engine == "transformers":
    import torch
    from transformers import AutoModelForSequenceClassification
    torch.set_num_threads(threads)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    extra["attention"] = model.config._attn_implementation

    def infer(enc):
      with torch.inference_mode():
        return model(input_ids=torch.from_numpy(enc["input_ids"]),
                     attention_mask=torch.from_numpy(enc["attention_mask"])).logits[:, 0].float().numpy()
  elif engine == "onnxruntime":
    import onnxruntime as ort
    extra["conversion"] = conversion(size, "onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(os.path.join(converted_dir(size), "model.onnx"), options,
                                   providers=["CPUExecutionProvider"])
    extra["version"] = ort.__version__

    def infer(enc):
      return session.run(None, {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})[0][:, 0]
  else:
    import openvino as ov
    import openvino.properties as props
    import openvino.properties.hint as hints
    extra["conversion"] = conversion(size, "openvino")
    precision = "bf16" if engine == "openvino-bf16" else "f32"
    mode = hints.PerformanceMode.THROUGHPUT if engine == "openvino-throughput" else hints.PerformanceMode.LATENCY
    core = ov.Core()
    compiled = core.compile_model(core.read_model(os.path.join(converted_dir(size), "openvino.xml")), "CPU", {
        hints.inference_precision: precision, props.inference_num_threads: threads, hints.performance_mode: mode})
    extra.update(version=ov.__version__, performance_hint=str(compiled.get_property(hints.performance_mode)),
                 inference_precision=compiled.get_property(hints.inference_precision).to_string(),
                 inference_num_threads=compiled.get_property(props.inference_num_threads),
                 num_streams=str(compiled.get_property(props.num_streams)),
                 infer_requests=compiled.get_property(props.optimal_number_of_infer_requests),
                 matmul_precisions=openvino_precisions(compiled))
    if engine == "openvino-throughput":
      queue, infer = ov.AsyncInferQueue(compiled, extra["infer_requests"]), None
    else:
      request = compiled.create_infer_request()

      def infer(enc):
        return request.infer({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})[0][:, 0].copy()
  return infer, queue, extra


def script(engine: str, size: str, threads: int, source: str, output: str, batch: int = 16,
           tokenizer: str = "transformers") -> None:
  """A user's scoring script: read, tokenize, score in sorted batches, write. `tokenizer`:
  transformers' AutoTokenizer, as the engines' own guides show, or the `tokenizers` library
  alone, the leanest script (it skips importing transformers, 1.5 s here)."""
  import pyarrow as pa
  import pyarrow.parquet as pq
  with open(source, encoding="utf-8") as f:
    records = [json.loads(line) for line in f]
  tokenize, pad = _tokenizer(size, tokenizer)
  infer, queue, _ = load(size, engine, threads)
  ids = tokenize([PREFIX + r["text"] for r in records])
  scores = np.empty(len(ids), np.float32)
  if queue is not None:
    queue.set_callback(lambda request, idx: scores.__setitem__(idx, request.get_output_tensor(0).data[:, 0]))
  for idx in batches(ids, "sorted", batch):
    enc = pad([ids[i] for i in idx])
    if queue is not None:
      queue.start_async(enc, idx)
    else:
      scores[idx] = infer(enc)
  if queue is not None:
    queue.wait_all()
  pq.write_table(pa.table({"id": [str(r.get("id")) for r in records], "score": scores}), output)


def _tokenizer(size: str, library: str):
  """(tokenize: texts -> token ids, pad: ids -> int64 input_ids and attention_mask)."""
  if library == "transformers":
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(common.checkpoint(size))

    def pad(ids):
      enc = tokenizer.pad({"input_ids": ids}, padding="longest", return_tensors="np")
      return {k: np.asarray(enc[k], np.int64) for k in ("input_ids", "attention_mask")}
    return (lambda texts: tokenizer(texts, truncation=True, max_length=common.MAX_LENGTH)["input_ids"]), pad
  from tokenizers import Tokenizer
  # The pipeline as AutoTokenizer builds it (transformers 5 rewrites XLM-R's normalizer and
  # pre-tokenizer: the checkpoint's tokenizer.json alone tokenizes 166 of 192 documents
  # differently), saved once by a child process, as a lean user's setup step would.
  saved = os.path.join(converted_dir(size), "tokenizer-backend.json")
  if not os.path.exists(saved):
    os.makedirs(converted_dir(size), exist_ok=True)
    subprocess.run([sys.executable, "-c", "import sys; from transformers import AutoTokenizer; "
                    "AutoTokenizer.from_pretrained(sys.argv[1]).backend_tokenizer.save(sys.argv[2])",
                    common.checkpoint(size), saved], check=True)
  tokenizer = Tokenizer.from_file(saved)
  tokenizer.no_padding()
  tokenizer.enable_truncation(common.MAX_LENGTH)
  pad_id = tokenizer.token_to_id("<pad>")

  def pad(ids):
    mask = np.zeros((len(ids), max(map(len, ids))), np.int64)
    input_ids = np.full(mask.shape, pad_id, np.int64)
    for row, doc in enumerate(ids):
      input_ids[row, :len(doc)], mask[row, :len(doc)] = doc, 1
    return {"input_ids": input_ids, "attention_mask": mask}
  return (lambda texts: [e.ids for e in tokenizer.encode_batch(texts)]), pad


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--engine", default="openvino-throughput")
  parser.add_argument("--size", default="base")
  parser.add_argument("--threads", type=int, default=os.cpu_count())
  parser.add_argument("--input")
  parser.add_argument("--output")
  parser.add_argument("--tokenizer", choices=("transformers", "tokenizers"), default="transformers")
  parser.add_argument("--convert", help=argparse.SUPPRESS)  # size:onnxruntime|openvino, in a child process
  args = parser.parse_args(argv)
  if args.convert:
    convert(*args.convert.split(":"))
    return 0
  ensure_converted(args.size, args.engine)
  script(args.engine, args.size, args.threads, args.input, args.output, tokenizer=args.tokenizer)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
