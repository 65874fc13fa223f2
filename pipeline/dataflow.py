"""Describing a Dataflow job offline.

Beam's `--dry_run` builds the DataflowRunner's job and stops before staging or submitting it,
which is also before the job's environment is filled in and `--dataflow_job_file` is written.
This completes the description with Beam's own `Environment` (nothing staged) and writes it, with
the portable pipeline beside it, so the job a launch would submit can be checked without a cloud.
"""
from __future__ import annotations

import hashlib
import json
import logging

from pipeline import io

log = logging.getLogger(__name__)


def write_job_description(result, job_file: str) -> None:
  from apache_beam.runners.dataflow.internal import apiclient
  from google.protobuf import json_format

  job = result.job
  pipeline = job.proto_pipeline
  staging = job.google_cloud_options.staging_location or ""
  job.proto.environment = apiclient.Environment(
      packages=[], options=job.options, environment_version=apiclient._FNAPI_ENVIRONMENT_MAJOR_VERSION,
      proto_pipeline_staged_url=io.join(staging, "pipeline.pb"), proto_pipeline=pipeline,
      pipeline_proto_hash=hashlib.sha256(pipeline.SerializeToString()).hexdigest()).proto
  io.write_bytes_atomic(job_file, job.json().encode("utf-8"))
  io.write_bytes_atomic(job_file + ".pipeline.json",
                        json.dumps(json_format.MessageToDict(pipeline), indent=1).encode("utf-8"))
  log.info("wrote the Dataflow job description to %s (and its pipeline to %s.pipeline.json)",
           job_file, job_file)
