"""Helpers to run the Snakemake workflow on a copy of the project in a
temporary directory (shared by the workflow, fault and Slurm tests)."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMALL_CONFIG = ROOT / "tests" / "workflow_config.yaml"
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def make_project(tmp: Path, config: Path | str = SMALL_CONFIG) -> Path:
  """Copies the workflow into tmp with `config` as config/config.yaml."""
  shutil.copy(ROOT / "Snakefile", tmp / "Snakefile")
  shutil.copytree(ROOT / "workflow", tmp / "workflow", ignore=shutil.ignore_patterns("__pycache__"))
  # The default workflow profile (profiles/default/) applies to every run;
  # `slurm` links to profiles/slurm, as in the project root.
  shutil.copytree(ROOT / "profiles", tmp / "profiles")
  os.symlink("profiles/slurm", tmp / "slurm")
  (tmp / "config").mkdir()
  shutil.copy(ROOT / "config" / "schema.yaml", tmp / "config" / "schema.yaml")
  text = config.read_text() if isinstance(config, Path) else config
  (tmp / "config" / "config.yaml").write_text(text)
  return tmp


def copy_project(project: Path, dest: Path) -> Path:
  """A copy of a built project (results and Snakemake's records) to change."""
  return Path(shutil.copytree(project, dest, symlinks=True))


# Without the variables, so tests see what the workflow itself sets for jobs.
CLEAN_ENV = {
    k: v
    for k, v in os.environ.items()
    if k not in ("XLA_PYTHON_CLIENT_PREALLOCATE", "PJRT_NPROC", "SLURM_CPUS_PER_TASK")
}
# The Slurm plugin, loaded by every snakemake, runs `scontrol show config` at
# start; with Slurm's client installed (test_slurm) but no controller running
# that waits 10 s. An empty Slurm config fails at once; these runs are local.
ENV = {**CLEAN_ENV, "SLURM_CONF": "/dev/null"}


def snakemake(project: Path, *args, timeout=900, check=True) -> subprocess.CompletedProcess:
  """Runs Snakemake locally, bounded by `timeout -k`; stdout holds its merged
  output. With check, a failure raises with that output."""
  proc = subprocess.run(
      ["timeout", "-k", "30", str(timeout), SNAKEMAKE, "--cores", "2", *args],
      cwd=project,
      env=ENV,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
  )
  if check and proc.returncode:
    raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout}")
  return proc


def planned_jobs(project: Path, *targets) -> dict[str, int]:
  """Jobs a run would execute, per rule (from a dry run's job stats)."""
  out = snakemake(project, "-n", *targets).stdout
  if "Nothing to be done" in out:
    return {}
  table = out.split("Job stats:")[1].split("total")[0]
  jobs = dict(re.findall(r"^(\w+)\s+(\d+)\s*$", table, re.M))
  return {k: int(v) for k, v in jobs.items() if k != "all"}
