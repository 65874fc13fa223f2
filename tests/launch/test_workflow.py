"""templates/score_workflow.yaml: its structure, and executions of it against fake Dataflow and
Cloud Storage connectors with a fake clock (tests/launch/workflows.py), so no test sleeps."""
import datetime
import json
import urllib.parse

import pytest

from tests.launch.launcher import REPO, SCHEDULE, dry, options
from tests.launch.workflows import (Clock, DefinitionError, Execution, WorkflowError, http_error,
                                    translate)

yaml = pytest.importorskip("yaml")

SOURCE = REPO / "templates" / "score_workflow.yaml"
LAUNCH = "googleapis.dataflow.v1b3.projects.locations.flexTemplates.launch"
GET_JOB = "googleapis.dataflow.v1b3.projects.locations.jobs.get"
GET_OBJECT = "googleapis.storage.v1.objects.get"
NOW = datetime.datetime(2025, 1, 2, 3, 0, tzinfo=datetime.timezone.utc).timestamp()
HOUR = 3600


def argument(**extra):
    """What launch.sh schedule puts in the scheduler's body, plus `extra`."""
    return {
        "project": "proj-1", "region": "us-central1", "template": "gs://bkt/templates/t.json",
        "job_prefix": "koedu-score", "date_offset_days": 1,
        "parameters": {"input": "gs://crawl/{date}/*.jsonl.zst", "output": "gs://corpus/{date}",
                       "model": "gs://models/{date}-pick"},
        "environment": {"sdkContainerImage": "img", "machineType": "ct5lp-hightpu-1t"},
        **extra}


class Cloud:
    """Fake connectors. `runs` scripts the states jobs.get reports for each launched job in turn
    (the last one repeats); a DONE job writes OUTPUT/stats.json as the pipeline does.
    `objects` maps "bucket/name" to the clock time it appears at."""

    def __init__(self, clock, runs=(), objects=None, launch_error=None, storage_error=None):
        self.clock, self.runs, self.objects = clock, list(runs), dict(objects or {})
        self.launch_error, self.storage_error = launch_error, storage_error
        self.launches, self.jobs, self.lookups = [], {}, []

    def connectors(self):
        return {LAUNCH: self.launch, GET_JOB: self.get_job, GET_OBJECT: self.get_object}

    def launch(self, projectId, location, body):
        if self.launch_error:
            raise self.launch_error
        assert (projectId, location) == ("proj-1", "us-central1")
        assert set(body) == {"launchParameter"}
        parameter = body["launchParameter"]
        assert set(parameter) <= {"jobName", "containerSpecGcsPath", "parameters", "environment"}
        self.launches.append(parameter)
        job_id = f"2025-01-01_00_00_00-{len(self.launches)}"
        self.jobs[job_id] = (parameter, list(self.runs[len(self.launches) - 1]))
        return {"job": {"id": job_id, "name": parameter["jobName"], "projectId": projectId}}

    def get_job(self, projectId, location, jobId, view=None):
        assert (projectId, location, view) == ("proj-1", "us-central1", "JOB_VIEW_SUMMARY")
        parameter, states = self.jobs[jobId]
        state = states.pop(0) if len(states) > 1 else states[0]
        if state == "JOB_STATE_DONE":
            output = urllib.parse.urlparse(parameter["parameters"]["output"])
            self.objects.setdefault(f"{output.netloc}{output.path}/stats.json", self.clock.now)
        return {"id": jobId, "name": parameter["jobName"], "currentState": state}

    def get_object(self, bucket, object):
        self.lookups.append((bucket, object, self.clock.now))
        if self.storage_error:
            raise self.storage_error
        # The object name arrives URL-encoded: a raw "/" would address another path (a 404).
        if "/" in object:
            raise http_error(404, "No such object (unencoded name)")
        name = f"{bucket}/{urllib.parse.unquote(object)}"
        if self.objects.get(name, float("inf")) > self.clock.now:
            raise http_error(404, f"No such object: {name}")
        return {"bucket": bucket, "name": urllib.parse.unquote(object)}


def execute(args, source=None, **cloud):
    clock = Clock(NOW)
    fake = Cloud(clock, **cloud)
    definition = yaml.safe_load(source if source is not None else SOURCE.read_text())
    execution = Execution(definition, fake.connectors(), clock)
    try:
        return execution.run(args), fake, clock
    except WorkflowError as error:
        return error, fake, clock


RUNNING = ["JOB_STATE_PENDING", "JOB_STATE_RUNNING", "JOB_STATE_RUNNING"]


# --- structure ------------------------------------------------------------------------------

def steps_of(workflow):
    """{step name: body} of every step, nested ones included."""
    found = {}

    def walk(steps):
        for step in steps:
            ((name, body),) = step.items()
            found[name] = body
            for inner in [body.get("try", {}), body.get("except", {}), body.get("for", {}), body,
                          *body.get("switch", [])]:
                walk(inner.get("steps", []))
    walk(workflow["steps"])
    return found


def test_workflow_structure():
    definition = yaml.safe_load(SOURCE.read_text())
    main, exists = steps_of(definition["main"]), steps_of(definition["object_exists"])
    assert definition["main"]["params"] == ["args"]
    # the poll loop: jobs.get, then a sleep that jumps back to it
    assert main["poll_job"]["call"] == GET_JOB
    assert main["sleep_for_job"] == {"call": "sys.sleep", "args": {"seconds": "${poll_seconds}"},
                                     "next": "poll_job"}
    init = {k: v for item in main["init"]["assign"] for k, v in item.items()}
    assert set(init["terminal_states"]) == {"JOB_STATE_DONE", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED",
                                            "JOB_STATE_UPDATED", "JOB_STATE_DRAINED"}
    # the retry branch: bounded by max_attempts, back to the launch
    nexts = {case.get("next"): case["condition"] for case in main["judge_state"]["switch"]}
    assert nexts["pause_before_relaunch"] == "${attempt < max_attempts}"
    assert main["pause_before_relaunch"]["next"] == "launch"
    assert main["launch_job"]["try"]["call"] == LAUNCH
    # the crawl marker: checked, slept on, given up with a raise
    assert main["check_crawl"]["call"] == "object_exists"
    assert main["sleep_for_crawl"]["next"] == "check_crawl"
    assert "crawl incomplete" in main["crawl_incomplete"]["raise"]["message"]
    # already complete: stats.json looked up before the launch, and a return without a launch
    assert main["check_stats"] == {"call": "object_exists", "args": {"url": "${stats_url}"},
                                   "result": "complete"}
    assert main["already_complete"]["return"]["status"] == "already_complete"
    # the ends: a success return and a raise naming date, job and state
    assert main["succeeded"]["return"]["status"] == "succeeded"
    message = main["attempts_exhausted"]["raise"]["message"]
    assert all(word in message for word in ("date", "job_id", "state"))
    assert exists["get"]["try"]["call"] == GET_OBJECT
    assert "text.url_encode" in exists["get"]["try"]["args"]["object"]


# --- executions -----------------------------------------------------------------------------

def test_job_succeeds_first_time():
    result, cloud, clock = execute(argument(), runs=[RUNNING + ["JOB_STATE_DONE"]])
    assert result == {"status": "succeeded", "date": "2025-01-01", "output": "gs://corpus/2025-01-01",
                      "job_id": "2025-01-01_00_00_00-1", "job_ids": ["2025-01-01_00_00_00-1"],
                      "state": "JOB_STATE_DONE", "attempts": 1}
    (launched,) = cloud.launches
    assert launched["jobName"] == "koedu-score-20250101"
    assert launched["containerSpecGcsPath"] == "gs://bkt/templates/t.json"
    assert launched["parameters"] == {"input": "gs://crawl/2025-01-01/*.jsonl.zst",
                                      "output": "gs://corpus/2025-01-01",
                                      "model": "gs://models/2025-01-01-pick"}
    assert launched["environment"] == argument()["environment"]
    assert clock.slept == [300] * 3, "polled until the job ended, 300 s apart"
    # stats.json looked up (encoded) before the launch and again once the job ended
    assert [(b, o) for b, o, _ in cloud.lookups] == [("corpus", "2025-01-01%2Fstats.json")] * 2


def test_failed_job_is_relaunched_under_a_new_name():
    result, cloud, _ = execute(argument(), runs=[RUNNING + ["JOB_STATE_FAILED"], ["JOB_STATE_DONE"]])
    assert result["status"] == "succeeded" and result["attempts"] == 2
    assert result["job_ids"] == ["2025-01-01_00_00_00-1", "2025-01-01_00_00_00-2"]
    first, second = cloud.launches
    assert (first["jobName"], second["jobName"]) == ("koedu-score-20250101", "koedu-score-20250101-a2")
    assert first["parameters"] == second["parameters"] and first["environment"] == second["environment"]


@pytest.mark.parametrize("state", ["JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_DRAINED"])
def test_job_failing_every_time_fails_the_execution(state):
    error, cloud, _ = execute(argument(max_attempts=3), runs=[[state]] * 3)
    assert isinstance(error, WorkflowError)
    message = error.value["message"]
    assert "2025-01-01" in message and "2025-01-01_00_00_00-3" in message and state in message
    assert error.value["attempts"] == 3 and error.value["state"] == state
    assert [p["jobName"] for p in cloud.launches] == [
        "koedu-score-20250101", "koedu-score-20250101-a2", "koedu-score-20250101-a3"]


def test_max_attempts_one_never_relaunches():
    error, cloud, _ = execute(argument(max_attempts=1), runs=[["JOB_STATE_FAILED"]])
    assert isinstance(error, WorkflowError) and len(cloud.launches) == 1


def test_waits_for_the_crawl_marker_then_launches():
    marker = {"crawl/2025-01-01/_SUCCESS": NOW + 2 * HOUR}
    result, cloud, clock = execute(argument(crawl_complete_marker="gs://crawl/{date}/_SUCCESS"),
                                   runs=[["JOB_STATE_DONE"]], objects=marker)
    assert result["status"] == "succeeded"
    checks = [(b, o, t) for b, o, t in cloud.lookups if b == "crawl"]
    assert all(o == "2025-01-01%2F_SUCCESS" for _, o, _ in checks)
    assert checks[-1][2] >= NOW + 2 * HOUR > checks[-2][2], "launched once the marker was there"
    assert len(cloud.launches) == 1


def test_crawl_never_complete_skips_the_day_visibly():
    args = argument(crawl_complete_marker="gs://crawl/{date}/_SUCCESS", crawl_wait_hours=6)
    error, cloud, clock = execute(args, runs=[["JOB_STATE_DONE"]])
    assert isinstance(error, WorkflowError)
    assert error.value["status"] == "skipped"
    assert "skipped: crawl incomplete" in error.value["message"]
    assert "2025-01-01" in error.value["message"] and "gs://crawl/2025-01-01/_SUCCESS" in error.value["message"]
    assert cloud.launches == []
    assert 6 * HOUR <= clock.now - NOW < 6 * HOUR + 300


def test_crawl_wait_zero_checks_once():
    args = argument(crawl_complete_marker="gs://crawl/{date}/_SUCCESS", crawl_wait_hours=0)
    error, cloud, clock = execute(args)
    assert isinstance(error, WorkflowError) and clock.now == NOW and cloud.launches == []


def test_finished_day_is_already_complete_without_a_launch():
    result, cloud, _ = execute(argument(crawl_complete_marker="gs://crawl/{date}/_SUCCESS"),
                               objects={"corpus/2025-01-01/stats.json": 0})
    assert result == {"status": "already_complete", "date": "2025-01-01",
                      "output": "gs://corpus/2025-01-01", "job_ids": [], "attempts": 0}
    assert cloud.launches == [] and cloud.jobs == {}
    assert [b for b, _, _ in cloud.lookups] == ["corpus"], "no wait for the crawl either"


def test_job_failing_after_writing_stats_is_complete():
    # The job's last step wrote stats.json (every unit finished), then the job ended otherwise.
    class Launcher(Cloud):
        def get_job(self, **kwargs):
            self.objects["corpus/2025-01-01/stats.json"] = 0
            return {**super().get_job(**kwargs), "currentState": "JOB_STATE_FAILED"}

    clock = Clock(NOW)
    fake = Launcher(clock, runs=[["JOB_STATE_FAILED"]])
    result = Execution(yaml.safe_load(SOURCE.read_text()), fake.connectors(), clock).run(argument())
    assert result["status"] == "already_complete" and result["state"] == "JOB_STATE_FAILED"
    assert len(fake.launches) == 1


def test_done_without_stats_is_relaunched():
    class Forgetful(Cloud):  # DONE, yet no stats.json appears
        def get_job(self, **kwargs):
            job = super().get_job(**kwargs)
            self.objects.clear()
            return job

    clock = Clock(NOW)
    fake = Forgetful(clock, runs=[["JOB_STATE_DONE"]] * 2)
    error = pytest.raises(WorkflowError, Execution(yaml.safe_load(SOURCE.read_text()),
                                                   fake.connectors(), clock).run, argument(max_attempts=2))
    assert "JOB_STATE_DONE" in error.value.value["message"] and len(fake.launches) == 2


def test_refused_launch_fails_at_once():
    error, cloud, _ = execute(argument(), launch_error=http_error(409, "job koedu-score-20250101 exists"))
    assert isinstance(error, WorkflowError)
    message = error.value["message"]
    assert "2025-01-01" in message and "koedu-score-20250101" in message and "exists" in message
    assert error.value["attempts"] == 1


def test_storage_errors_other_than_404_fail_the_execution():
    error, cloud, _ = execute(argument(), storage_error=http_error(403, "forbidden"))
    assert isinstance(error, WorkflowError) and error.value["code"] == 403 and cloud.launches == []


def test_output_outside_gcs_counts_done_as_success():
    args = argument()
    args["parameters"]["output"] = "s3://corpus/{date}"
    result, cloud, _ = execute(args, runs=[["JOB_STATE_DONE"]])
    assert result["status"] == "succeeded" and cloud.lookups == []


@pytest.mark.parametrize("extra, date, job", [
    ({"date_offset_days": 0}, "2025-01-02", "koedu-score-20250102"),
    ({"date_offset_days": 3}, "2024-12-30", "koedu-score-20241230"),
    ({"date": "2023-06-15"}, "2023-06-15", "koedu-score-20230615"),  # a backfill
])
def test_date_and_job_name(extra, date, job):
    result, cloud, _ = execute(argument(**extra), runs=[["JOB_STATE_DONE"]])
    assert result["date"] == date
    (launched,) = cloud.launches
    assert launched["jobName"] == job
    assert launched["parameters"]["output"] == f"gs://corpus/{date}"
    assert launched["parameters"]["model"] == f"gs://models/{date}-pick"


def test_defaults_without_optional_arguments():
    args = argument()
    del args["date_offset_days"]
    result, cloud, clock = execute(args, runs=[["JOB_STATE_FAILED"]] * 3)
    assert isinstance(result, WorkflowError) and len(cloud.launches) == 3  # max_attempts 3
    assert cloud.launches[0]["jobName"] == "koedu-score-20250102"


def test_the_argument_launch_sh_schedules_drives_the_workflow(env):
    *_, create = dry(env, *SCHEDULE, "--date_offset_days", "1", "--max_attempts", "2",
                     "--crawl_complete_marker", "gs://crawl/{date}/_SUCCESS", "--crawl_wait_hours", "0.5")
    args = json.loads(json.loads(options(create)["--message-body"])["argument"])
    marker = {"crawl/2025-01-01/_SUCCESS": NOW + 0.25 * HOUR}
    result, cloud, _ = execute(args, runs=[["JOB_STATE_FAILED"], ["JOB_STATE_DONE"]], objects=marker)
    assert result["status"] == "succeeded" and result["attempts"] == 2
    assert cloud.launches[1]["jobName"] == "koedu-score-20250101-a2"
    assert cloud.launches[0]["parameters"] == {"input": "gs://crawl/2025-01-01/*.jsonl.zst",
                                               "output": "gs://corpus/2025-01-01"}
    assert cloud.launches[0]["environment"] == args["environment"]
    error, cloud, clock = execute(args)  # the marker never appears: half an hour, then skipped
    assert "skipped: crawl incomplete" in error.value["message"] and cloud.launches == []
    assert 0.5 * HOUR <= clock.now - NOW < 0.5 * HOUR + 300


# --- the interpreter catches mistakes -----------------------------------------------------

@pytest.mark.parametrize("good, bad", [
    ("text.url_encode(name)", "text.url_encod(name)"),
    ("launched.job.id}", "launched.job.idd}"),
    ('"-a" + string(attempt)', '"-a" + attempt'),
    ("${attempt < max_attempts}", "${attempt < max_attempt}"),
    ("next: poll_job", "next: pol_job"),
    ('("HttpError" in e.tags)', "('HttpError' in e.tags)"),
])
def test_a_typo_in_the_workflow_fails(good, bad):
    runs = [["JOB_STATE_FAILED"], ["JOB_STATE_DONE"]]
    source = SOURCE.read_text()
    assert good in source
    expected, _, _ = execute(argument(), source=source, runs=runs)
    assert expected["status"] == "succeeded" and expected["attempts"] == 2
    try:
        result, _, _ = execute(argument(), source=source.replace(good, bad, 1), runs=runs)
    except DefinitionError:
        return
    assert result != expected


def test_interpreter_scopes_and_syntax():
    loop = {"main": {"steps": [
        {"init": {"assign": [{"kept": 0}]}},
        {"loop": {"for": {"value": "v", "in": [1, 2], "steps": [
            {"inner": {"assign": [{"kept": "${kept + v}"}, {"local": "${v}"}]}}]}}},
        {"done": {"return": "${local}"}}]}}
    with pytest.raises(DefinitionError, match="local"):
        Execution(loop, {}, Clock(0)).run(None)
    loop["main"]["steps"][2] = {"done": {"return": "${kept}"}}
    assert Execution(loop, {}, Clock(0)).run(None) == 3
    for bad in ("x if y else z", "'single'", "[1, 2]", "sys.sleep(1)", "lambda: 1"):
        with pytest.raises(DefinitionError):
            Execution({"main": {"steps": [{"s": {"return": "${" + bad + "}"}}]}}, {}, Clock(0)).run(None)
    assert translate('not(a.b) and "x" in c') == "not ( __var('a') ['b'] ) and \"x\" in __var('c')"
