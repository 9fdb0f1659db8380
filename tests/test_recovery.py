"""The recovery module (workflow/lib/recovery.py) alone, without running the
workflow: which command a run is, who owns Snakemake's locks, what a later run
does about a killed one."""

import base64
import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests import workflow


def load_recovery():
  spec = importlib.util.spec_from_file_location(
      "recovery", workflow.ROOT / "workflow" / "lib" / "recovery.py"
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


recovery = load_recovery()


def running(pid: int) -> bool:
  """Alive and not a zombie (an orphan's reaper may be slow or absent)."""
  try:
    return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
  except psutil.NoSuchProcess:
    return False


@pytest.mark.parametrize(
    "argv, mode, executor",
    [
        (["snakemake", "--cores", "2", "results/x"], "execute", "local"),
        (["snakemake", "-n", "results/x"], "dry run", "local"),
        (["snakemake", "--dry-run"], "dry run", "local"),
        (["snakemake", "--unlock"], "unlock", "local"),
        (["snakemake", "--dag"], "inspect", "local"),
        (["snakemake", "--summary"], "inspect", "local"),
        (["snakemake", "--report", "report.html"], "inspect", "local"),
        (["snakemake", "--cores", "1", "--executor", "slurm"], "execute", "slurm"),
        # The executor of a profile counts as if typed.
        (["snakemake", "--profile", "slurm"], "execute", "slurm"),
        # The Python API, or another program: no command line to go by.
        (["python", "run.py", "-n"], "unknown", "unknown"),
        ([], "unknown", "unknown"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_the_command_line_says_what_a_run_does(argv, mode, executor, monkeypatch):
  monkeypatch.chdir(workflow.ROOT)  # where `--profile slurm` and profiles/default are found
  args = recovery.cli_args(
      [
          str(Path(sys.executable).with_name(a)) if i == 0 and a == "snakemake" else a
          for i, a in enumerate(argv)
      ]
  )
  assert recovery.run_mode(args) == mode
  assert recovery.executor(args) == executor


def test_inspecting_options_are_snakemake_options():
  """INSPECTING names argparse destinations of Snakemake's parser: a renamed
  option would otherwise make an inspecting command look like a run."""
  from snakemake import cli

  options = vars(cli.get_argument_parser().parse_args([]))
  assert set(recovery.INSPECTING) <= set(options)
  assert {"dryrun", "unlock", "executor", "profile", "report", "keep_incomplete"} <= set(options)


def owner(project: Path, pid: int, host: str | None = None, **fields) -> Path:
  """An owner record as a run of the workflow writes it (recovery.record_owner)."""
  host = host or socket.gethostname()
  try:
    created = psutil.Process(pid).create_time()
  except psutil.NoSuchProcess:
    created = 1.0
  path = project / ".snakemake" / "owners" / f"{host}.{pid}.json"
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(
      json.dumps(
          {
              "pid": pid,
              "host": host,
              "created": created,
              "executor": "local",
              "profile": [],
              "logfiles": [],
              **fields,
          }
      )
  )
  return path


@pytest.mark.parametrize(
    "case", ["no-owner", "dead-local", "live", "other-host", "dead-slurm", "old-record-live"]
)
def test_stale_lock_decisions(tmp_path, case):
  """Who may remove Snakemake's lock (recovery.recover), without Snakemake."""
  p = tmp_path
  (p / ".snakemake" / "locks").mkdir(parents=True)
  for name in ("0.input.lock", "0.output.lock"):
    (p / ".snakemake" / "locks" / name).write_text("results/x\n")
  # A job process of this project: its command line names a job script.
  script = f"{p}/.snakemake/scripts/tmpjob.train_candidate.py"
  job = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", script])
  dead = subprocess.Popen(["true"])
  dead.wait()
  live = subprocess.Popen(["sleep", "120"])
  try:
    if case == "dead-local":
      record = owner(p, dead.pid)
    elif case == "live":
      record = owner(p, live.pid)
    elif case == "old-record-live":  # an older version's record: no start time
      record = owner(p, live.pid, created=None)
    elif case == "other-host":
      record = owner(p, dead.pid, host="elsewhere.example")
    elif case == "dead-slurm":
      (p / "run.log").write_text("Building DAG of jobs...\nSLURM run ID: 1a2b-3c\n")
      record = owner(
          p, dead.pid, executor="slurm", profile=["slurm"], logfiles=[str(p / "run.log")]
      )
    said = []
    recovery.recover(p, "dry run", log=said.append)  # never changes anything
    assert running(job.pid) and len(recovery.lock_files(p)) == 2
    assert len(said) == 1, said
    said.clear()
    recovery.recover(p, "execute", log=said.append, grace=5)
    (message,) = said
    if case == "dead-local":  # stale: its jobs stopped, its lock removed
      assert not running(job.pid) and not recovery.lock_files(p) and not record.exists()
      assert f"snakemake pid {dead.pid}" in message and f"pids {job.pid})" in message
      return
    assert running(job.pid) and len(recovery.lock_files(p)) == 2  # kept
    if case == "no-owner":  # unknown: possibly live elsewhere
      assert "no recorded owner" in message and "snakemake --unlock" in message
    elif case in ("live", "other-host", "old-record-live"):
      assert "run in progress" in message and record.exists()
    else:  # Slurm: its jobs are out of reach; the user cancels them, then unlocks.
      assert "scancel --name 1a2b-3c" in message
      assert "snakemake --profile slurm --unlock" in message and record.exists()
      said.clear()
      recovery.recover(p, "unlock", log=said.append)
      assert not said and not record.exists() and running(job.pid)
  finally:
    for proc in (job, live):
      proc.kill()
      proc.wait()


def test_stop_ends_what_ignores_sigterm(tmp_path):
  proc = subprocess.Popen(
      [
          sys.executable,
          "-c",
          "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
          "print(flush=True); time.sleep(120)",
      ],
      stdout=subprocess.PIPE,
  )
  proc.stdout.readline()  # SIGTERM is ignored from here on
  assert recovery.stop([proc.pid], grace=0.5) == []  # SIGKILL after the grace period
  assert not running(proc.pid)
  proc.wait()


def marker(project: Path, output: str) -> Path:
  """Snakemake's incomplete marker of an output, as Snakemake writes it."""
  path = project / ".snakemake" / "incomplete" / base64.urlsafe_b64encode(output.encode()).decode()
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text('{"external_jobid": null}')
  return path


def test_a_dead_runs_job_that_finished_keeps_its_outputs_one_that_did_not_is_rebuilt(tmp_path):
  """After `kill -9` of snakemake: the jobs of its journal whose outputs all
  exist and are newer than the job's start lose their incomplete marks; the
  others (an output missing, or older than the start) keep them."""
  p = tmp_path
  dead = subprocess.Popen(["true"])
  dead.wait()
  record = owner(p, dead.pid)
  t0 = 1_000_000.0
  jobs = {
      "done": ["results/a/1.msgpack", "results/a/log.parquet"],
      "half": ["results/b/1.msgpack", "results/b/log.parquet"],
      "stale": ["results/c/1.msgpack"],
  }
  with open(recovery.journal_path(record), "w") as f:
    for i, (name, outputs) in enumerate(jobs.items()):
      f.write(
          json.dumps(
              {
                  "job": i,
                  "rule": "train",
                  "wildcards": {"run": name},
                  "output": outputs,
                  "log": [],
                  "time": t0,
              }
          )
          + "\n"
      )
    f.write(
        json.dumps(
            {
                "job": 9,
                "rule": "train",
                "wildcards": {},
                "output": ["results/d"],
                "log": [],
                "time": t0,
            }
        )
        + "\n"
    )
    f.write(json.dumps({"job": 9, "end": "JOB_FINISHED", "time": t0}) + "\n")
    f.write('{"job": 10, "rule": "tr')  # cut short by the kill
  for path in jobs["done"] + jobs["half"][:1] + jobs["stale"]:
    (p / path).parent.mkdir(parents=True, exist_ok=True)
    (p / path).write_bytes(b"x")
    os.utime(p / path, (t0 + 5, t0 + 5))
  os.utime(p / jobs["stale"][0], (t0 - 5, t0 - 5))  # not this job's
  marks = {o: marker(p, o) for outputs in jobs.values() for o in outputs}
  assert {
      j["wildcards"].get("run") for j in recovery.read_journal(recovery.journal_path(record))
  } == {"done", "half", "stale"}

  said = []
  recovery.recover(p, "dry run", log=said.append)
  assert (
      "keeps the outputs of the jobs that finished after it was killed (train (run=done))"
      in said[0]
  )
  assert all(m.exists() for m in marks.values())  # a dry run changes nothing
  recovery.recover(p, "execute", log=said.append)
  assert (
      "kept the outputs of the jobs that finished after it was killed (train (run=done))" in said[1]
  ), said
  assert set(recovery.incomplete_markers(p)) == set(jobs["half"] + jobs["stale"])
  assert not record.exists() and not recovery.journal_path(record).exists()


def test_incomplete_markers_read_snakemakes_long_names(tmp_path):
  """Paths longer than a file name are cut into '@'-prefixed directories."""
  output = "results/" + "d" * 300 + "/x.parquet"
  encoded = base64.urlsafe_b64encode(output.encode()).decode()
  chunks = [encoded[i : i + 254] for i in range(0, len(encoded), 254)]
  path = tmp_path.joinpath(".snakemake", "incomplete", *("@" + c for c in chunks[:-1]), chunks[-1])
  path.parent.mkdir(parents=True)
  path.write_text("{}")
  (tmp_path / ".snakemake" / "incomplete" / "migration_underway").write_text("")
  assert recovery.incomplete_markers(tmp_path) == {output: path}
  recovery.unmark({"output": [output]}, {output: path})
  assert not (tmp_path / ".snakemake" / "incomplete" / ("@" + chunks[0])).exists()


def test_a_job_stopped_by_a_signal_says_so_and_is_journaled(tmp_path):
  """Interrupts.filter on Snakemake's job events (without Snakemake): the
  journal a later run reads, and the message of a stopped job's error."""
  import logging
  from types import SimpleNamespace

  def record(event, **fields):
    r = logging.LogRecord("snakemake", logging.INFO, "", 0, "", None, None)
    r.__dict__.update(event=SimpleNamespace(name=event), **fields)
    return r

  journal = tmp_path / "h.1.jobs.jsonl"
  watch = recovery.Interrupts(tmp_path, journal=journal)
  for jobid, e in [(3, "x2"), (4, "x3"), (5, "x4")]:
    assert watch.filter(
        record(
            "JOB_INFO",
            jobid=jobid,
            rule_name="train_candidate",
            wildcards={"setting": "s", "expansion": e},
            log=[],
            output=[f"results/{e}/log.parquet"],
        )
    )
  watch.filter(record("JOB_FINISHED", job_id=3))
  failed = record(
      "JOB_ERROR",
      jobid=4,
      rule_name="train_candidate",
      rule_msg=None,
      output=["results/x3/log.parquet"],
  )
  watch.filter(failed)
  assert failed.rule_msg is None  # failed on its own: Snakemake's report as it is
  watch.signal = "SIGTERM"  # as _notice sets it
  stopped = record(
      "JOB_ERROR",
      jobid=5,
      rule_name="train_candidate",
      rule_msg=None,
      output=["results/x4/log.parquet"],
  )
  watch.filter(stopped)
  assert stopped.rule_msg == (
      "train_candidate (setting=s, expansion=x4) was stopped by SIGTERM (kill, or a batch "
      "system); the outputs it wrote are removed and rebuilt by the next run of the same command"
  )
  assert not watch.running and recovery.read_journal(journal) == []
  assert len(journal.read_text().splitlines()) == 6
