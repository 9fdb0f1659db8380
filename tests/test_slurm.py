"""The small study through the Slurm profile on a real single-node cluster
(start-slurm.sh, as root) gives the same tables as a local run.

The test types the user's command in the project root, `snakemake --profile
slurm`, with the test cluster's differences on the command line (see
`cluster_overrides`): partition `debug`, no GPUs (the cluster has none), one CPU
and 1 GB per job, first status check after 2 s. To stay within a few minutes
on 2 cores it builds one setting's correlation table (and so its metrics,
barrier sets, proxies, training runs) for one seed.

The cluster scripts are taken from $MANIFOLD_METRIC_SLURM_SCRIPTS, or from
../shared/slurm beside the repository.
"""

import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.workflow import CLEAN_ENV as ENV
from tests.workflow import ROOT, SMALL_CONFIG, SNAKEMAKE, make_project

pytestmark = pytest.mark.slurm

SLURM = Path(os.environ.get("MANIFOLD_METRIC_SLURM_SCRIPTS", ROOT.parent / "shared" / "slurm"))
PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge", "slurmdbd", "mariadb-server"]
TABLES = ("barriers", "metrics", "correlations")
TARGET = "results/correlations/digits-mlp.parquet"


def bounded(seconds: int, *cmd) -> list[str]:
  return ["timeout", "-k", "30", str(seconds), *map(str, cmd)]


def registry_reachable() -> bool:
  """True if any apt source answers HTTP within a few seconds."""
  text = "".join(
      Path(f).read_text()
      for f in [
          "/etc/apt/sources.list",
          *glob.glob("/etc/apt/sources.list.d/*.list"),
          *glob.glob("/etc/apt/sources.list.d/*.sources"),
      ]
      if os.path.exists(f)
  )
  for uri in dict.fromkeys(re.findall(r"^[^#\n]*?(https?://\S+)", text, re.M)):
    try:
      urllib.request.urlopen(urllib.request.Request(uri, method="HEAD"), timeout=5)
      return True
    except urllib.error.HTTPError:  # An answer, even 404, means it is reachable.
      return True
    except (urllib.error.URLError, OSError):
      continue
  return False


def skip_reason() -> str | None:
  if os.geteuid() != 0:
    return "needs root: start-slurm.sh installs and starts the Slurm daemons"
  if not (SLURM / "start-slurm.sh").exists():
    return f"no {SLURM / 'start-slurm.sh'}"
  if not shutil.which("apt-get"):
    return "start-slurm.sh needs Debian or Ubuntu (apt)"
  dpkg = subprocess.run(bounded(30, "dpkg", "-s", *PACKAGES), capture_output=True)
  if dpkg.returncode and not registry_reachable():
    return "Slurm packages are not installed and apt cannot reach the package registry"
  return None


@pytest.fixture(scope="module")
def cluster(request):
  if reason := skip_reason():
    pytest.skip(reason)
  # Registered first: stops whatever part of the cluster did come up.
  request.addfinalizer(
      lambda: subprocess.run(bounded(120, SLURM / "stop-slurm.sh"), capture_output=True)
  )
  start = subprocess.run(bounded(420, SLURM / "start-slurm.sh"), capture_output=True, text=True)
  assert start.returncode == 0, f"start-slurm.sh failed:\n{start.stdout}\n{start.stderr}"


def cluster_overrides() -> list[str]:
  """Command-line options fitting profiles/slurm to the test cluster. Given on
  the command line, default-resources and set-resources replace the profile's
  whole key: so every rule's GPU request goes (the cluster has none), and
  every job asks for one CPU and 1 GB (the node has 2 CPUs: two jobs at a time)."""
  profile = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
  rules = sorted(profile["set-resources"])
  return [
      "--default-resources",
      "slurm_partition=debug",
      "mem_mb=1000",
      "cpus_per_task=1",
      "runtime=30",
      "--set-resources",
      *[f"{r}:cpus_per_task=1" for r in rules],
      "--slurm-init-seconds-before-status-checks",
      "2",
  ]  # default 40 s per check


def test_profile_slurm_as_typed_plans_gpu_jobs(tmp_path):
  """`snakemake --profile slurm` in the project root finds the profile (a link
  to profiles/slurm, its one source) and requests its GPUs per rule."""
  p = make_project(tmp_path)
  env = {**ENV, "SLURM_CONF": "/dev/null"}
  out = subprocess.run(
      bounded(300, SNAKEMAKE, "--profile", "slurm", "-n", TARGET),
      cwd=p,
      env=env,
      capture_output=True,
      text=True,
  )
  assert out.returncode == 0, out.stdout + out.stderr
  text = out.stdout + out.stderr
  assert "Using profiles slurm and workflow specific profile profiles/default" in text
  train = re.search(r"rule train_base:.*?resources: ([^\n]*)", text, re.S).group(1)
  assert "gpu=1" in train and "runtime=720" in train
  tables = re.search(r"rule metrics:.*?resources: ([^\n]*)", text, re.S).group(1)
  assert "gpu" not in tables


def job_processes(project: Path) -> dict[int, tuple[str, dict]]:
  """Rule-script processes of `project` now running: pid -> (argv[0], environment)."""
  found, marker = {}, f"{project}/.snakemake/scripts/".encode()
  for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
      cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
      if marker in cmd:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        found[int(pid)] = (
            cmd.split(b"\0")[0].decode(),
            dict(e.decode().split("=", 1) for e in env if b"=" in e),
        )
    except (FileNotFoundError, ProcessLookupError):
      pass
  return found


def test_small_study_on_slurm_equals_local_run(cluster, tmp_path):
  (tmp_path / "local").mkdir()
  (tmp_path / "slurm").mkdir()
  config = yaml.safe_load(SMALL_CONFIG.read_text())
  config["seeds"] = config["seeds"][:1]
  local, remote = (make_project(tmp_path / d, yaml.safe_dump(config)) for d in ("local", "slurm"))
  # Both at once: the local run uses the cores the Slurm run leaves idle
  # between status checks.
  runs, logs = {}, {name: tmp_path / f"{name}.out" for name in ("local", "slurm")}
  for name, project, args in [
      ("local", local, ["--cores", "2", TARGET]),
      ("slurm", remote, ["--profile", "slurm", *cluster_overrides(), TARGET]),
  ]:
    with open(logs[name], "w") as log:
      runs[name] = subprocess.Popen(
          bounded(600, SNAKEMAKE, *args),
          cwd=project,
          env=ENV,
          stdout=log,
          stderr=subprocess.STDOUT,
          start_new_session=True,
      )
  try:
    jobs = {}
    while runs["slurm"].poll() is None:
      jobs.update(job_processes(remote))
      time.sleep(0.25)
    runs["local"].wait()
  finally:
    for run in runs.values():
      if run.poll() is None:  # A failed assertion above: stop Snakemake and its jobs.
        os.killpg(run.pid, signal.SIGTERM)
        run.wait()
  out = {name: log.read_text() for name, log in logs.items()}
  for name, run in runs.items():
    assert run.returncode == 0, f"{name} run failed:\n{out[name]}"

  # Every job went through Slurm and ran with this interpreter and the
  # workflow's JAX setting (this process's environment lacks it).
  run_id = re.search(r"SLURM run ID: (\S+)", out["slurm"]).group(1)
  sacct = bounded(
      60, "sacct", "-n", "-X", "-P", "-S", "now-6hours", "--name", run_id, "-o", "State"
  )
  states = subprocess.run(sacct, capture_output=True, text=True, check=True).stdout.split()
  submitted = re.findall(r"submitted with SLURM jobid (\d+)", out["slurm"])
  # The candidates' trainings went as one job array (sacct lists each task),
  # the tables as one group job.
  arrays = re.findall(
      r"Submitted array job with Snakemake IDs (\S+) and SLURM job ID \d+", out["slurm"]
  )
  tasks = sum(len(ids.split(",")) for ids in arrays)
  assert arrays and tasks == len(config["settings"]["digits-mlp"]["expansions"]), out["slurm"]
  assert re.search(r"slurm_logs/group_cpu_", out["slurm"]), out["slurm"]
  assert len(states) == len(submitted) + tasks and set(states) == {"COMPLETED"}, out["slurm"]
  assert jobs, "no job process seen"
  for exe, env in jobs.values():
    assert "SLURM_JOB_ID" in env and env.get("XLA_PYTHON_CLIENT_PREALLOCATE") == "false"
    # XLA's CPU threads: the job's allocation, not the 1 of the submitting run.
    assert env.get("PJRT_NPROC") == env.get("SLURM_CPUS_PER_TASK", "1"), env
    assert Path(exe).parent == Path(sys.executable).parent

  # Same seeds, same numbers: Slurm jobs see the same CPUs as local ones here.
  for table in TABLES:
    files = sorted(p.relative_to(local) for p in (local / "results" / table).rglob("*.parquet"))
    assert files and files == sorted(
        p.relative_to(remote) for p in (remote / "results" / table).rglob("*.parquet")
    )
    for f in files:
      pd.testing.assert_frame_equal(
          pd.read_parquet(remote / f), pd.read_parquet(local / f), check_exact=True, obj=str(f)
      )
