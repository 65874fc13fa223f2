"""Every option of every koedu entry point, declared once (options/__init__.py says how to use it).

Grouped by who owns the meaning: scoring, training, the tools beside them, the caches every
process keeps, and the launcher's cloud settings. A default owned by other code is a Ref.
"""
from __future__ import annotations

from options.declare import Option, Ref, Template

MiB = 1 << 20

# The entry points, in the order docs/options.md lists them.
SCORE, TRAIN, ANNOTATE = "pipeline.run", "train.run", "train.annotate"
COMPARE, RETHRESHOLD, PUBLISH = "pipeline.compare", "pipeline.rethreshold", "pipeline.publish"
L_SCORE, L_IMAGE, L_TEMPLATE, L_SCHEDULE, L_TRAIN = (
    "launch.sh score", "launch.sh image", "launch.sh template", "launch.sh schedule", "launch.sh train")
LAUNCH = (L_SCORE, L_IMAGE, L_TEMPLATE, L_SCHEDULE, L_TRAIN)
ENTRY_POINTS = (SCORE, TRAIN, ANNOTATE, COMPARE, RETHRESHOLD, PUBLISH, *LAUNCH)
DATAFLOW = (L_SCORE, L_TEMPLATE, L_SCHEDULE)  # verbs that describe Dataflow workers


def globs(value: str) -> tuple[str, ...]:
  return tuple(g for g in value.split(",") if g)


def ints(value: str) -> tuple[int, ...]:
  return tuple(int(x) for x in value.split(","))


def _train(name: str) -> Ref:
  return Ref(f"train.config:TrainConfig.{name}")


def _annotate(name: str) -> Ref:
  return Ref(f"train.annotate.config:AnnotateConfig.{name}")


def _publish(name: str) -> Ref:
  return Ref(f"pipeline.publish:PublishConfig.{name}")


SCORING = [
    Option("input", "Shards to score: GLOB[,GLOB...] of .jsonl/.json/.jsonl.gz/.jsonl.zst/.parquet, "
           "local paths, gs:// or any fsspec URL. Matched by the workers, not the launcher.",
           (SCORE, L_SCORE, L_SCHEDULE), template=Template("Input shards", optional=False)),
    Option("input_manifest", "Instead of --input: a text file (local, gs://, any fsspec URL) listing "
           "one shard URL a line, for crawls listed elsewhere.", (SCORE,)),
    Option("output", "Directory for scores/, edu/, errors/, stats.json. A rerun into the same "
           "directory finishes an interrupted run.", (SCORE, L_SCORE, L_SCHEDULE),
           template=Template("Output directory", optional=False)),
    Option("model", "Hugging Face hub id, local directory or gs:// directory of the classifier "
           "(config.json, safetensors or msgpack weights, tokenizer files).", (SCORE, L_SCORE, L_SCHEDULE),
           default=Ref("model.hub:DEFAULT_MODEL"), template=Template("Model")),
    Option("text_field", "Field of each record that holds the document text.", (SCORE, TRAIN, ANNOTATE),
           default="text", template=Template("Text field")),
    Option("id_field", "Field holding the document id (optional per record).", (SCORE, ANNOTATE), default="id",
           template=Template("Id field")),
    Option("threshold", "edu/ keeps records with int_score >= threshold.", (SCORE, L_SCORE, L_SCHEDULE),
           default=3.0, type=float, template=Template("Threshold", regex=r"^[0-5](\.[0-9]+)?$")),
    Option("batch_size", "Records per chunk: chunk k of a shard is rows [k * N, (k + 1) * N), scored "
           "together, written as one file per output, and resumed as a whole.", (SCORE,), default=4096,
           type=int, template=Template("Batch size")),
    Option("max_length", "Tokens per document after truncation, <s> and </s> included.", (SCORE, TRAIN),
           default=512, type=int, template=Template("Max length")),
    Option("dtype", "float32, bfloat16_3x (three bf16 matmul passes, fp32 elsewhere) or bfloat16 "
           "(one pass); auto = what model/runtime.py picks for the workers' hardware: bfloat16 on "
           "TPUs, GPUs and CPUs with AMX (koedu's bf16 kernels), float32 on other CPUs. See "
           "model/precision.py.", (SCORE,), default="auto",
           choices=("auto", "float32", "bfloat16_3x", "bfloat16"), template=Template("Compute dtype")),
    Option("tokens_per_device", "Tokens in one device's share of a compiled batch.", (SCORE,),
           default=16384, type=int, template=Template("Tokens per device")),
    Option("max_record_bytes", "Records larger than this go to errors/ as record_too_large, unread "
           "past the bound (a run's memory is bounded by its settings, not by its largest record).",
           (SCORE,), default=16 * MiB, type=int),
    Option("unit_bytes", "Shards larger than this are split into units of about this many "
           "(compressed) bytes, each read, scored and written by one worker: no shard is a straggler.",
           (SCORE,), default=256 * MiB, type=int),
    Option("host_threads", "Threads that tokenize and pack for the device in each worker process "
           "(0: one per core).", (SCORE,), default=0, type=int),
    Option("device_retries", "Times a failed device batch is retried, with backoff (about 2 minutes "
           "in all at the default), before the run fails: a device that halts for a minute costs a "
           "minute.", (SCORE,), default=8, type=int),
    Option("allow_pickle", "Accept pickled pytorch_model.bin weights (unpickling runs code).",
           (SCORE, TRAIN), default=False, type=bool, action="flag"),
    Option("share_model_across_processes", "One process per machine holds the model and the device; "
           "the others read, tokenize and write, and call it (workers with several SDK processes).",
           (SCORE,), default=False, type=bool, action="flag"),
]

# Where a process keeps what it can compute again. Unset: the environment variable (kept for
# compatibility; a worker image sets it, e.g. the kernel cache), else ~/.cache/koedu/...
# (model/caches.py resolves them where they are used: on the workers, not the launcher).
# train.run reads the variables only: its parser's namespace is exactly a TrainConfig, whose
# fields are training's to add.
CACHES = [
    Option("model_cache_dir", "Where workers keep models fetched from gs:// or the hub (default "
           "~/.cache/koedu/models).", (SCORE,), template=Template("Model cache directory")),
    Option("compilation_cache_dir", "JAX persistent compilation cache, so reruns compile nothing "
           "(default ~/.cache/koedu/jax; 'none' to disable).", (SCORE,),
           template=Template("JAX compilation cache")),
    Option("checksum_cache_dir", "Checksums of local model files, remembered so a rerun does not "
           "hash gigabytes again (default $KOEDU_CHECKSUM_CACHE, else ~/.cache/koedu/checksums).",
           (SCORE,)),
    Option("tokenizer_cache_dir", "Tokenizers as transformers builds them, kept so a worker need not "
           "import transformers (default $KOEDU_TOKENIZER_CACHE, else ~/.cache/koedu/tokenizers).",
           (SCORE,)),
    Option("kernel_cache_dir", "The fused CPU attention kernel, compiled on first use (default "
           "$KOEDU_KERNEL_CACHE, which the CPU image sets, else ~/.cache/koedu/kernels).", (SCORE,)),
]

TRAINING = [
    Option("data", "Shard globs, comma-separated.", (TRAIN, L_TRAIN), type=globs, required=True),
    Option("output", "Directory (local or gs://) for the model, reports and checkpoints.", (TRAIN, L_TRAIN),
           required=True),
    Option("model", "Base: hub id, local or fsspec directory; a classifier to continue or an "
           "encoder-only checkpoint to add a fresh head to.", (TRAIN,), default=Ref("train.config:DEFAULT_BASE")),
    Option("eval_data", "Held-out shard globs (default: split off --data).", (TRAIN,), default=(), type=globs),
    Option("label_field", "Field holding the 0-5 label.", (TRAIN,), default=_train("label_field")),
    Option("freeze_encoder", "Train the head only (default), or everything.", (TRAIN,),
           default=_train("freeze_encoder"), type=bool, action="switch"),
    Option("cache_features", "With a frozen encoder, encode each document once (default) or every step.",
           (TRAIN,), default=_train("cache_features"), type=bool, action="switch"),
    Option("epochs", "Passes over the data (default: 20 frozen, 3 when the encoder trains).", (TRAIN,),
           type=int, group="steps"),
    Option("max_steps", "Optimizer steps, instead of epochs.", (TRAIN,), type=int, group="steps"),
    Option("batch_size", "Global documents per optimizer step.", (TRAIN,), default=_train("batch_size"), type=int),
    Option("device_batch_size", "Documents per device per pass; smaller than batch_size/devices "
           "accumulates gradients (default: the most that fit each device's memory, by XLA's analysis "
           "of the compiled step).", (TRAIN,), type=int),
    Option("device_memory_bytes", "Memory per device to fit passes into (default: what the device "
           "reports).", (TRAIN,), type=int),
    Option("learning_rate", "Peak learning rate (default: 3e-4 with a frozen encoder, the seed's; "
           "2e-5 when the encoder trains).", (TRAIN,), type=float),
    *[Option(name, help, (TRAIN,), default=_train(name), type=float) for name, help in [
        ("warmup_ratio", "Fraction of all steps of linear warm-up; cosine decay to 0 after."),
        ("b1", "AdamW beta1."), ("b2", "AdamW beta2."), ("eps", "AdamW epsilon."),
        ("weight_decay", "AdamW weight decay, on kernels and embeddings."),
        ("max_grad_norm", "Gradient clipping norm (0: off)."),
        ("eval_size", "Held-out documents, or a fraction when below 1.")]],
    *[Option(name, help, (TRAIN,), default=_train(name), type=int) for name, help in [
        ("seed", "Split, data order and a fresh head's initialisation."),
        ("encode_tokens_per_device", "Tokens per device per pass when caching features."),
        ("threshold", "int_score at or above which a document is educational, for binary F1."),
        ("checkpoint_every", "Steps between checkpoints; also at every epoch's end."),
        ("keep_checkpoints", "Latest checkpoints kept for resuming (the best one is kept apart)."),
        ("log_every", "Steps between training-loss log lines.")]],
    Option("row_lengths", "Padded token-row lengths, comma-separated.", (TRAIN,), default=_train("row_lengths"),
           type=ints),
    Option("dtype", "Precision of training passes (model/precision.py); parameters stay float32.",
           (TRAIN,), default=_train("dtype"), choices=Ref("model.precision:COMPUTE")),
    Option("score_dtype", "Precision the model will be scored at (auto: pipeline.run's on this "
           "platform); a frozen encoder's features are computed, and the model evaluated, at it.",
           (TRAIN,), default=_train("score_dtype"), choices=("auto", "float32", "bfloat16_3x", "bfloat16")),
    Option("distributed", "Join the other hosts (jax.distributed.initialize()) even where the TPU "
           "runtime does not report several; it is automatic where it does.", (TRAIN,), default=False,
           type=bool, action="flag"),
]

# train.annotate: its defaults are AnnotateConfig's (train/annotate/config.py); --text_field and
# --id_field are scoring's, read the same way by the same reader. The API key is no option:
# flags are logged (--api_key_env names the variable holding it).
ANNOTATION = [
    Option("input", "Shard globs, comma-separated (.jsonl, .json, .jsonl.gz, .jsonl.zst, .parquet; "
           "fsspec URLs).", (ANNOTATE,), type=globs, required=True),
    Option("output", "Directory (local or gs://) for annotations/, errors/, stats.json and _run.json. "
           "A rerun of the same command into it finishes an interrupted run.", (ANNOTATE,), required=True),
    Option("endpoint", "OpenAI-compatible base URL, e.g. http://localhost:8000/v1.", (ANNOTATE,), required=True),
    Option("llm", "Model name the endpoint serves, e.g. Qwen/Qwen2.5-32B-Instruct.", (ANNOTATE,), required=True),
    Option("sample", "Documents to annotate; a larger N holds every document of a smaller one.", (ANNOTATE,),
           type=int, required=True),
    Option("seed", "Changes which documents are sampled, nothing else.", (ANNOTATE,), default=_annotate("seed"),
           type=int),
    Option("prompt", "Prompt file holding {text} once (default: FineWeb-Edu's rubric for Korean, packaged).",
           (ANNOTATE,), default=_annotate("prompt")),
    Option("max_chars", "Characters of each document put in the prompt: bounds every request's tokens.",
           (ANNOTATE,), default=_annotate("max_chars"), type=int),
    Option("temperature", "Sampling temperature (0: greedy, the same answer on a rerun).", (ANNOTATE,),
           default=_annotate("temperature"), type=float),
    Option("max_tokens", "Tokens of an answer at most.", (ANNOTATE,), default=_annotate("max_tokens"), type=int),
    Option("concurrency", "Requests in flight at once.", (ANNOTATE,), default=_annotate("concurrency"), type=int),
    Option("requests_per_minute", "Rate limit over all requests, retries included (0: none).", (ANNOTATE,),
           default=_annotate("requests_per_minute"), type=float),
    Option("api_key_env", "Environment variable holding the API key.", (ANNOTATE,),
           default=_annotate("api_key_env")),
    Option("timeout_seconds", "Per request, connect to last byte.", (ANNOTATE,),
           default=_annotate("timeout_seconds"), type=float),
    Option("max_retries", "Attempts after the first, per request, before the run fails.", (ANNOTATE,),
           default=_annotate("max_retries"), type=int),
    *[Option(name, help, (ANNOTATE,), default=_annotate(name), type=float) for name, help in [
        ("backoff_seconds", "First retry's wait; doubles per retry, with jitter."),
        ("max_backoff_seconds", "Longest wait between retries (a longer Retry-After is still honoured).")]],
    Option("flush_every", "Answers per written part: what a crash can cost at most.", (ANNOTATE,),
           default=_annotate("flush_every"), type=int),
    *[Option(name, help, (ANNOTATE,), default=_annotate(name), type=float) for name, help in [
        ("flush_seconds", "... or this long, whichever comes first."),
        ("progress_seconds", "Between progress lines.")]],
]

TOOLS = [
    Option("a", "Output directory of the first run (the reference, e.g. float32).", (COMPARE,),
           action="positional"),
    Option("b", "Output directory of the second run (e.g. bfloat16).", (COMPARE,), action="positional"),
    Option("min_agreement", "Share of documents whose int_score must be the same.", (COMPARE,),
           default=0.995, type=float),
    Option("json", "Also write the figures to this file.", (COMPARE,)),
    Option("output", "The scoring run's output directory.", (RETHRESHOLD, PUBLISH), required=True),
    Option("threshold", "Keep int_score >= threshold.", (RETHRESHOLD,), type=float, required=True),
    Option("edu_output", "Where to write (default DIR/edu_t<threshold>).", (RETHRESHOLD,)),
]

# pipeline.publish: its flags are not PipelineOptions (the package doc says why); PublishConfig
# owns the defaults.
PUBLISHING = [
    Option("dataset", "Where to write the dataset (local, gs://, any fsspec URL).", (PUBLISH,), required=True),
    Option("threshold", "Publish int_score >= threshold (default: the run's threshold).", (PUBLISH,),
           default=_publish("threshold"), type=float),
    Option("max_file_bytes", "A file's size at most, in bytes, planned from the chunks' sizes.", (PUBLISH,),
           default=_publish("max_file_bytes"), type=int),
    Option("row_group_bytes", "Uncompressed bytes per Parquet row group.", (PUBLISH,),
           default=_publish("row_group_bytes"), type=int),
    Option("push_to_hub", "Upload DEST to this Hub dataset repo.", (PUBLISH,), default=_publish("push_to_hub")),
    Option("dry_run", "With --push_to_hub: list, do not upload.", (PUBLISH,), default=_publish("dry_run"),
           type=bool, action="flag"),
    Option("from_scores", "Rebuild the subset from scores/ and the shards even at the run's own threshold "
           "(for a run whose unit summaries do not record edu schemas: scored by an earlier koedu).",
           (PUBLISH,), default=_publish("from_scores"), type=bool, action="flag"),
]



CLOUD = [
    Option("dry_run", "Print every command the verb would run, one per line, shell-quoted, and "
           "run none.", LAUNCH, default=False, type=bool, action="flag"),
    Option("project", "Google Cloud project.", LAUNCH, env="KOEDU_PROJECT"),
    Option("region", "Dataflow region, also the Artifact Registry location.", LAUNCH[:4], env="KOEDU_REGION"),
    Option("bucket", "Bucket NAME: gs://NAME/tmp, /staging, /templates.", DATAFLOW, env="KOEDU_BUCKET"),
    Option("repository", "Artifact Registry repository.", LAUNCH[:4], default="koedu", env="KOEDU_REPOSITORY"),
    Option("image", "Worker image (default: REGION-docker.pkg.dev/PROJECT/REPOSITORY/koedu-worker:"
           "ACCEL-GITREV).", LAUNCH[:4], env="KOEDU_IMAGE"),
    Option("tpu_type", "Dataflow TPU type: tpu-v5-lite-podslice or tpu-v6e-slice.", LAUNCH[:4],
           default="tpu-v5-lite-podslice", env="KOEDU_TPU_TYPE"),
    Option("tpu_topology", "TPU topology of one worker: 1x1, 2x2 or 2x4.", LAUNCH[:4], default="1x1",
           env="KOEDU_TPU_TOPOLOGY"),
    Option("accelerator", "GPU workers instead of TPUs: nvidia-l4, nvidia-tesla-a100 (A100 40GB), "
           "nvidia-a100-80gb or nvidia-h100-80gb (docs/operations.md).", LAUNCH[:4], env="KOEDU_ACCELERATOR"),
    Option("gpus", "GPUs per worker with --accelerator: 1 (unset, unless --machine_type says), 2, 4 or 8 "
           "(16 for nvidia-tesla-a100).", LAUNCH[:4], env="KOEDU_GPUS"),
    Option("machine_type", "With --accelerator: another machine type of the GPU's series with that "
           "many GPUs (e.g. g2-standard-16 for more vCPUs beside one L4).", DATAFLOW, env="KOEDU_MACHINE_TYPE"),
    Option("num_workers", "Workers at start.", DATAFLOW, default="1", env="KOEDU_NUM_WORKERS"),
    Option("max_num_workers", "Most workers autoscaling may add.", DATAFLOW, default="4", env="KOEDU_MAX_WORKERS"),
    Option("disk_size_gb", "Boot disk per worker (the image is several GB; the model is cached).",
           DATAFLOW, default="100", env="KOEDU_DISK_SIZE_GB"),
    Option("harness_threads", "Threads of each SDK process (--number_of_worker_harness_threads).",
           DATAFLOW, default="12", env="KOEDU_HARNESS_THREADS"),
    Option("worker_zone", "Zone of the workers; needed to use a zonal TPU reservation.", DATAFLOW,
           env="KOEDU_WORKER_ZONE"),
    Option("job_name", "Dataflow job name (default koedu-score-UTCDATE-UTCTIME).", (L_SCORE,)),
    Option("builder", "cloudbuild (no local Docker needed) or docker.", (L_IMAGE,), default="cloudbuild",
           env="KOEDU_BUILDER"),
    Option("template_path", "Flex Template file (default gs://BUCKET/templates/koedu-score-ACCEL.json).",
           (L_TEMPLATE, L_SCHEDULE), env="KOEDU_TEMPLATE"),
    Option("service_account", "Runs the workflow and signs the scheduler's call (required).", (L_SCHEDULE,),
           env="KOEDU_SERVICE_ACCOUNT"),
    Option("cron", "When the scheduled build runs.", (L_SCHEDULE,), default="0 3 * * *", env="KOEDU_SCHEDULE"),
    Option("time_zone", "Time zone of --cron.", (L_SCHEDULE,), default="Etc/UTC", env="KOEDU_TIME_ZONE"),
    Option("date_offset_days", "The run's {date} = today (UTC) minus N days.", (L_SCHEDULE,), default="0"),
    Option("crawl_complete_marker", "gs://BUCKET/OBJECT, may contain {date}: wait for it before "
           "launching (e.g. gs://crawl/{date}/_SUCCESS).", (L_SCHEDULE,), env="KOEDU_CRAWL_COMPLETE_MARKER"),
    Option("crawl_wait_hours", "How long to wait for the marker; then the run fails with \"skipped: "
           "crawl incomplete\".", (L_SCHEDULE,), default="6", env="KOEDU_CRAWL_WAIT_HOURS"),
    Option("max_attempts", "Dataflow jobs per run: a failed job is relaunched as NAME-a2, NAME-a3 "
           "(it resumes the finished chunks).", (L_SCHEDULE,), default="3", env="KOEDU_MAX_ATTEMPTS"),
    Option("scheduler_job", "Cloud Scheduler job name.", (L_SCHEDULE,), default="koedu-score-daily"),
    Option("workflow", "Workflow name; prefixes the Dataflow job names.", (L_SCHEDULE,), default="koedu-score"),
    Option("zone", "Zone of the TPU VM (required).", (L_TRAIN,), env="KOEDU_ZONE"),
    Option("tpu_name", "TPU VM name; an existing VM of this name is reused if it has the requested type.",
           (L_TRAIN,), default="koedu-train", env="KOEDU_TPU_NAME"),
    Option("accelerator_type", "TPU VM type: v5litepod-N, v6e-N, v5p-N or v4-N; N > 8 is a multi-host "
           "slice and train.run gets --distributed.", (L_TRAIN,), default="v5litepod-8",
           env="KOEDU_TRAIN_ACCELERATOR"),
    Option("runtime_version", "TPU VM runtime (default: from the accelerator type).", (L_TRAIN,),
           env="KOEDU_TPU_RUNTIME"),
    Option("spot", "Create a Spot TPU VM.", (L_TRAIN,), default=False, type=bool, action="flag"),
]

OPTIONS = [*SCORING, *CACHES, *TRAINING, *ANNOTATION, *TOOLS, *PUBLISHING, *CLOUD]


def check(options=None) -> None:
  """No entry point takes two declarations of one name; every entry point is listed."""
  options = OPTIONS if options is None else options
  seen = {}
  for o in options:
    for entry in o.used_by:
      if entry not in ENTRY_POINTS:
        raise ValueError(f"--{o.name}: unknown entry point {entry!r} (add it to ENTRY_POINTS)")
      if (entry, o.name) in seen:
        raise ValueError(f"{entry} takes --{o.name} twice")
      seen[entry, o.name] = o


check()
