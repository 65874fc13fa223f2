"""options/: one declaration per option, and everything made from it."""
import argparse
import dataclasses
import json
import subprocess
import sys

import pytest

import options
from options import catalog, render
from options.declare import Option, resolve

REPO = render.REPO


@pytest.mark.parametrize("path", [render.METADATA, render.DOCS])
def test_committed_files_are_what_the_catalog_renders(path):
  # After changing an option: python -m options.render, and commit what it wrote.
  assert (REPO / path).read_text(encoding="utf-8") == render.rendered()[path]


def test_render_check_names_a_stale_file(tmp_path, monkeypatch):
  monkeypatch.setattr(render, "REPO", tmp_path)
  (tmp_path / "templates").mkdir()
  (tmp_path / "docs").mkdir()
  assert render.main([]) == 0
  assert render.main(["--check"]) == 0
  (tmp_path / render.DOCS).write_text("edited by hand")
  assert render.main(["--check"]) == 1


def test_no_entry_point_takes_two_declarations_of_one_name():
  catalog.check()
  twice = [Option("x", "one", ("train.run",)), Option("x", "two", ("train.run", "pipeline.run"))]
  with pytest.raises(ValueError, match="train.run takes --x twice"):
    catalog.check(twice)
  with pytest.raises(ValueError, match="unknown entry point"):
    catalog.check([Option("x", "h", ("pipeline.nothing",))])


def test_scoring_config_fields_are_the_declared_options():
  from pipeline.options import ScoringConfig
  fields = {f.name: f.default for f in dataclasses.fields(ScoringConfig)}
  declared = {o.name: resolve(o.default) for o in options.declared("pipeline.run")}
  assert fields == declared


def test_defaults_owned_elsewhere_agree():
  from model import hub
  from model.precision import COMPUTE
  from train.config import TrainConfig
  scoring = {o.name: o for o in options.declared("pipeline.run")}
  assert resolve(scoring["model"].default) == hub.DEFAULT_MODEL
  assert scoring["dtype"].choices == ("auto", *COMPUTE)
  train = TrainConfig(data=("-",), output="-")
  for o in options.declared("train.run"):  # shared options carry one default for both
    if hasattr(train, o.name) and o.name not in ("data", "output", "epochs", "learning_rate"):
      assert resolve(o.default) == getattr(train, o.name), o.name


def test_pipeline_run_reads_every_option_through_beam(tmp_path):
  from apache_beam.options.pipeline_options import PipelineOptions

  from model import caches
  from pipeline.options import ScoringConfig
  argv = ["--input", "a/*.jsonl", "--output", "o/", "--threshold", "4", "--dtype", "bfloat16",
          "--allow_pickle", "--kernel_cache_dir", str(tmp_path / "k"), "--checksum_cache_dir",
          str(tmp_path / "c"), "--runner", "DirectRunner"]
  config = ScoringConfig.from_options(PipelineOptions(argv))
  assert (config.threshold, config.dtype, config.allow_pickle, config.output) == (4.0, "bfloat16", True, "o")
  saved = dict(caches._chosen)
  try:
    config.use_caches()
    assert caches.directory("kernels") == str(tmp_path / "k")
    assert caches.directory("checksums") == str(tmp_path / "c")
  finally:
    caches._chosen.clear()
    caches._chosen.update(saved)


@pytest.mark.parametrize("module", ["pipeline.run", "train.run", "train.annotate", "pipeline.compare",
                                    "pipeline.rethreshold", "pipeline.publish"])
def test_every_entry_point_lists_its_declared_options(module):
  result = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True,
                          timeout=120, cwd=REPO)
  assert result.returncode == 0, result.stderr
  for o in options.declared(module):
    assert o.flag in result.stdout, (module, o.flag)


def test_train_run_parses_as_before():
  from train import run
  args = vars(run.parser().parse_args(["--data", "a/*.jsonl,b/*.parquet", "--output", "o", "--no_freeze_encoder",
                                       "--row_lengths", "64,128", "--max_steps", "3"]))
  assert args["data"] == ("a/*.jsonl", "b/*.parquet")
  assert args["freeze_encoder"] is False and args["cache_features"] is True
  assert args["row_lengths"] == (64, 128) and args["max_steps"] == 3 and args["epochs"] is None
  assert args["dtype"] == "float32" and args["batch_size"] == 2048
  from train.config import TrainConfig
  TrainConfig(**args)  # the namespace is exactly a TrainConfig: train.run hands it over whole


def test_train_annotate_parses_as_before():
  from train.annotate.__main__ import parser
  from train.annotate.config import AnnotateConfig
  required = ["--input", "a/*.jsonl,,b/*.parquet", "--output", "o", "--endpoint", "http://h:8000/v1",
              "--llm", "m", "--sample", "5"]
  config = AnnotateConfig(**vars(parser().parse_args(required)))  # the namespace is exactly its fields
  assert config.input == ("a/*.jsonl", "b/*.parquet") and config.sample == 5
  for field in dataclasses.fields(AnnotateConfig):  # every default is the config's own
    if field.default is not dataclasses.MISSING:
      assert getattr(config, field.name) == field.default, field.name
  args = vars(parser().parse_args([*required, "--seed", "3", "--temperature", "0.5", "--prompt", "p.txt"]))
  assert (args["seed"], args["temperature"], args["prompt"]) == (3, 0.5, "p.txt")
  for i in range(0, len(required), 2):  # each required flag is refused when absent
    with pytest.raises(SystemExit):
      parser().parse_args(required[:i] + required[i + 2:])


def test_pipeline_publish_parses_as_before():
  from pipeline.publish import PublishConfig
  parser = options.parser("pipeline.publish")
  o, rest = parser.parse_known_args(["--output", "o/", "--dataset", "d", "--runner", "DirectRunner"])
  assert rest == ["--runner", "DirectRunner"]  # Beam's, handed to PipelineOptions
  # one field per option, the config's defaults: main hands the namespace over whole
  assert vars(o) == {f.name: f.default for f in dataclasses.fields(PublishConfig)} | {"output": "o/", "dataset": "d"}
  o, _ = parser.parse_known_args(["--output", "o", "--dataset", "d", "--threshold", "4", "--max_file_bytes", "7",
                                  "--push_to_hub", "koedu/x", "--dry_run", "--from_scores"])
  assert (o.threshold, o.max_file_bytes, o.push_to_hub, o.dry_run, o.from_scores) == (4.0, 7, "koedu/x", True, True)
  with pytest.raises(SystemExit):  # --dataset is required
    parser.parse_known_args(["--output", "o"])


def test_an_environment_variable_is_the_default_and_the_flag_wins():
  parser = options.add_arguments(argparse.ArgumentParser(), "launch.sh score", environ={"KOEDU_NUM_WORKERS": "7"})
  assert parser.parse_args([]).num_workers == "7"
  assert parser.parse_args(["--num_workers", "2"]).num_workers == "2"
  # pipeline.run's own options are handed on as typed; unset ones are left to its defaults
  assert parser.parse_args([]).threshold is None and parser.parse_args([]).model is None


def test_template_parameters_take_a_value_and_check_choices():
  metadata = json.loads((REPO / render.METADATA).read_text())
  declared = {o.name: o for o in options.declared("pipeline.run")}
  for p in metadata["parameters"]:
    o = declared[p["name"]]
    assert o.action == "store", f"{o.name}: a template passes --name=value"
    assert p["label"] and p["helpText"]
    if o.choices:
      assert p["regexes"] == ["^(" + "|".join(o.choices) + ")$"]
  assert not declared["input"].template.optional and not declared["output"].template.optional
