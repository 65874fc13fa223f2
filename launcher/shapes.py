"""One Dataflow worker shape, described once and rendered three ways: Beam flags (`score`), the
Flex Template's defaults (`template`), and the scheduler's FlexTemplateRuntimeEnvironment
(`schedule`). What each accelerator needs and why: docs/operations.md.
"""
from __future__ import annotations

import dataclasses


class Refused(ValueError):
  """A setting the launcher will not use: exit status 2, before any command runs."""


# (Dataflow TPU type, topology) -> (machine type Dataflow requires, libtpu's accelerator type, chips
# per host bounds). v5e rows and v6e 1x1: Dataflow's "Support for TPUs"; v6e 2x2/2x4: the Cloud
# TPU v6e page (docs/operations.md says what is unverified).
TPUS = {
    ("tpu-v5-lite-podslice", "1x1"): ("ct5lp-hightpu-1t", "v5litepod-1", "1,1,1"),
    ("tpu-v5-lite-podslice", "2x2"): ("ct5lp-hightpu-4t", "v5litepod-4", "2,2,1"),
    ("tpu-v5-lite-podslice", "2x4"): ("ct5lp-hightpu-8t", "v5litepod-8", "2,4,1"),
    ("tpu-v6e-slice", "1x1"): ("ct6e-standard-1t", "v6e-1", "1,1,1"),
    ("tpu-v6e-slice", "2x2"): ("ct6e-standard-4t", "v6e-4", "2,2,1"),
    ("tpu-v6e-slice", "2x4"): ("ct6e-standard-8t", "v6e-8", "2,4,1"),
}


@dataclasses.dataclass(frozen=True)
class Gpu:
  name: str  # as people say it
  machines: dict  # machine type -> GPUs it carries; the first with a count is that count's default
  bf16_tflops: float  # dense bf16 peak per GPU (NVIDIA data sheets), for the estimates below


# Dataflow's GPU types and the accelerator-optimized machines that carry them (Compute Engine
# "GPU machine types": G2 = L4, A2 Standard = A100 40GB, A2 Ultra = A100 80GB, A3 High = H100).
GPUS = {
    "nvidia-l4": Gpu("L4", {"g2-standard-4": 1, "g2-standard-8": 1, "g2-standard-12": 1, "g2-standard-16": 1,
                            "g2-standard-32": 1, "g2-standard-24": 2, "g2-standard-48": 4, "g2-standard-96": 8}, 121),
    "nvidia-tesla-a100": Gpu("A100 40GB", {"a2-highgpu-1g": 1, "a2-highgpu-2g": 2, "a2-highgpu-4g": 4,
                                           "a2-highgpu-8g": 8, "a2-megagpu-16g": 16}, 312),
    "nvidia-a100-80gb": Gpu("A100 80GB", {"a2-ultragpu-1g": 1, "a2-ultragpu-2g": 2, "a2-ultragpu-4g": 4,
                                          "a2-ultragpu-8g": 8}, 312),
    "nvidia-h100-80gb": Gpu("H100 80GB", {"a3-highgpu-1g": 1, "a3-highgpu-2g": 2, "a3-highgpu-4g": 4,
                                          "a3-highgpu-8g": 8}, 989),
}
# Estimates until bench/gpu.py measures them (docs/operations.md, "GPU workers"): the large model
# costs about 155 GFLOP per web-length document; at MFU of the bf16 peak a GPU scores
# peak * MFU / 155e9 documents/s. One SDK process feeds about 10,000 documents/s (its GIL:
# parsing, packing, writing), so a worker whose GPUs want more takes the shared layout.
GFLOP_PER_DOCUMENT, MFU_HIGH, ONE_PROCESS_DOCS_PER_S = 155.0, 0.5, 10_000
CUDA_IMAGE = "cuda12"  # one image for every GPU type: the tag prefix of `image --accelerator`


def gpu_docs_per_s(gpu: Gpu, mfu: float) -> float:
  return gpu.bf16_tflops * 1e3 * mfu / GFLOP_PER_DOCUMENT


@dataclasses.dataclass(frozen=True)
class WorkerShape:
  machine_type: str
  accelerator: str  # the worker_accelerator service option's value
  name: str  # names the template file: v5litepod-1, nvidia-l4-1
  image_flavour: str  # the image tag's prefix: one image per TPU accelerator, one for CUDA
  build: dict  # docker build: {"target": stage, "args": {ARG: value}} (Dockerfile)
  # "one": one SDK process per VM owns every chip or GPU (no_use_multiple_sdk_containers).
  # "shared": Dataflow's SDK process per vCPU; one of them owns the GPUs, the others tokenize
  # and send it token ids (--share_model_across_processes).
  layout: str = "one"
  num_workers: int = 1
  max_num_workers: int = 4
  disk_size_gb: int = 100
  harness_threads: int = 12
  worker_zone: str | None = None

  def experiments(self) -> list[str]:
    return [f"worker_accelerator={self.accelerator}"] + (
        ["no_use_multiple_sdk_containers"] if self.layout == "one" else [])

  def job_options(self) -> list[str]:
    """koedu's own options the layout needs (pipeline.run's, not Dataflow's)."""
    # Two host threads per process: a VM of 100-200 vCPUs has as many SDK processes, each
    # tokenizer call already uses every core, and each thread holds two chunks in flight.
    return ["--share_model_across_processes", "--host_threads=2"] if self.layout == "shared" else []

  def beam_flags(self) -> list[str]:
    flags = [f"--dataflow_service_options=worker_accelerator={self.accelerator}",
             f"--worker_machine_type={self.machine_type}"]
    flags += [f"--experiments={e}" for e in self.experiments()[1:]]
    flags += [f"--number_of_worker_harness_threads={self.harness_threads}",
              f"--num_workers={self.num_workers}", f"--max_num_workers={self.max_num_workers}",
              f"--disk_size_gb={self.disk_size_gb}"]
    if self.worker_zone:
      flags.append(f"--worker_zone={self.worker_zone}")
    return flags + self.job_options()

  def _pipeline_options(self) -> list[str]:
    return [f"number_of_worker_harness_threads={self.harness_threads}", f"disk_size_gb={self.disk_size_gb}"]

  def template_flags(self) -> list[str]:
    """`gcloud dataflow flex-template build` flags: the template's defaults, so a launch by hand
    gets these workers too (a scheduled launch passes them again, runtime_environment())."""
    self._check_templatable()
    flags = [f"--worker-machine-type={self.machine_type}",
             f"--additional-experiments={','.join(self.experiments())}",
             f"--additional-pipeline-options={','.join(self._pipeline_options())}",
             f"--num-workers={self.num_workers}", f"--max-workers={self.max_num_workers}"]
    if self.worker_zone:
      flags.append(f"--worker-zone={self.worker_zone}")
    return flags

  def runtime_environment(self) -> dict:
    """Fields of Dataflow's FlexTemplateRuntimeEnvironment (v1b3 REST API)."""
    self._check_templatable()
    environment = {"machineType": self.machine_type, "numWorkers": self.num_workers,
                   "maxWorkers": self.max_num_workers, "diskSizeGb": self.disk_size_gb,
                   "additionalExperiments": self.experiments(),
                   "additionalPipelineOptions": self._pipeline_options()}
    if self.worker_zone:
      environment["workerZone"] = self.worker_zone
    return environment

  def _check_templatable(self) -> None:
    if self.layout != "one":
      raise Refused(f"{self.machine_type} takes several SDK processes sharing one model "
                    "(--share_model_across_processes), a flag a template parameter cannot carry: "
                    "launch it with `launch.sh score`, or use fewer GPUs per worker for templates")


def tpu_shape(tpu_type: str, topology: str, **sizes) -> WorkerShape:
  if (tpu_type, topology) not in TPUS:
    raise Refused(f"unknown TPU type '{tpu_type}' with topology '{topology}' (--tpu_type / KOEDU_TPU_TYPE, "
                  "--tpu_topology / KOEDU_TPU_TOPOLOGY); known: tpu-v5-lite-podslice and tpu-v6e-slice, "
                  "each with 1x1, 2x2 or 2x4")
  machine, accel, bounds = TPUS[tpu_type, topology]
  return WorkerShape(machine, f"type:{tpu_type};topology:{topology}", accel, accel,
                     {"target": "tpu", "args": {"TPU_ACCELERATOR_TYPE": accel, "TPU_CHIPS_PER_HOST_BOUNDS": bounds}},
                     **sizes)


def gpu_shape(gpu_type: str, count: int | None = None, machine_type: str | None = None, **sizes) -> WorkerShape:
  if gpu_type not in GPUS:
    raise Refused(f"unknown GPU type '{gpu_type}' (--accelerator / KOEDU_ACCELERATOR); known: {', '.join(GPUS)}")
  machines = GPUS[gpu_type].machines
  if machine_type is None:
    count = count or 1
    machine_type = next((m for m, n in machines.items() if n == count), None)
    if machine_type is None:
      raise Refused(f"{gpu_type} comes {sorted(set(machines.values()))} to a machine, not {count} (--gpus)")
  elif machine_type not in machines:
    raise Refused(f"--machine_type {machine_type} does not carry {gpu_type}; machines that do: {', '.join(machines)}")
  elif count is not None and machines[machine_type] != count:
    raise Refused(f"--machine_type {machine_type} carries {machines[machine_type]} {gpu_type}, not --gpus {count}")
  count = machines[machine_type]
  wanted = count * gpu_docs_per_s(GPUS[gpu_type], MFU_HIGH)
  return WorkerShape(machine_type, f"type:{gpu_type};count:{count};install-nvidia-driver", f"{gpu_type}-{count}",
                     CUDA_IMAGE, {"target": "cuda", "args": {"KOEDU_EXTRAS": "cuda,gcp"}},
                     layout="one" if wanted <= ONE_PROCESS_DOCS_PER_S else "shared", **sizes)
