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
  shutil.copytree(ROOT / "workflow", tmp / "workflow",
                  ignore=shutil.ignore_patterns("__pycache__"))
  (tmp / "config").mkdir()
  shutil.copy(ROOT / "config" / "schema.yaml", tmp / "config" / "schema.yaml")
  text = config.read_text() if isinstance(config, Path) else config
  # Data paths relative to the repository must still resolve from tmp.
  text = text.replace("../shared/", f"{ROOT.parent}/shared/")
  (tmp / "config" / "config.yaml").write_text(text)
  return tmp


def snakemake(project: Path, *args, timeout=900, check=True) -> subprocess.CompletedProcess:
  env = {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
  proc = subprocess.run([SNAKEMAKE, "--cores", "2", *args], cwd=project, env=env,
                        capture_output=True, text=True, timeout=timeout)
  if check and proc.returncode:
    raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
  return proc


def planned_jobs(project: Path, *targets) -> dict[str, int]:
  """Jobs a run would execute, per rule (from a dry run's job stats)."""
  out = snakemake(project, "-n", *targets).stdout
  if "Nothing to be done" in out:
    return {}
  table = out.split("Job stats:")[1].split("total")[0]
  jobs = dict(re.findall(r"^(\w+)\s+(\d+)\s*$", table, re.M))
  return {k: int(v) for k, v in jobs.items() if k != "all"}
