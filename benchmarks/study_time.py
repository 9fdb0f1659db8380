"""The default study's wall time, job-seconds and start-up share, from a
finished run's Snakemake log.

  .venv/bin/python benchmarks/study_time.py <project> [--out result.json]

<project> is a directory where `snakemake --cores 2` ran the study (e.g. a
fresh clone after the README's first command). Job-seconds are the sum over
jobs of the time from a job's start to its end as the log stamps them (to the
second). Start-up is what a job runs before any work: Snakemake's preamble
(unpickling its `snakemake` object) and its script's module-level imports.
Which script each rule ran comes from the run's own metadata
(`.snakemake/metadata`), so an older version's scripts are read as they
were; each script's start-up is timed here, in fresh processes of this
interpreter (the project's environment: its package, its JAX), and charged
once per job of its rules. Imports a job makes while it works (SciPy where
correlations are computed) count as its work. Run it on an idle machine:
the figures of a loaded one are not comparable.
"""

import argparse
import ast
import datetime
import glob
import json
import os
import re
import statistics
import subprocess
import sys
import time

# What Snakemake's `script:` preamble imports before the script runs.
PREAMBLE = (
    "import pickle, snakemake.io, snakemake.script\n"
    "from snakemake.logging import logger\n"
    "from snakemake.iocontainers import Snakemake\n"
)


def rule_scripts(project: str) -> dict[str, str]:
  """Each rule's script, from Snakemake's per-output metadata of the run
  (its `code` is the `script:` path, relative to the rule's .smk file, which
  this project keeps in workflow/rules; Snakemake splits long record names
  into subdirectories)."""
  out = {}
  for top, _, files in os.walk(os.path.join(project, ".snakemake", "metadata")):
    for name in files:
      with open(os.path.join(top, name)) as f:
        record = json.load(f)
      code = (record.get("code") or "").strip().strip("\"'")
      if code.endswith(".py"):
        out[record["rule"]] = os.path.normpath(os.path.join(project, "workflow", "rules", code))
  return out


def start_code(script: str) -> str:
  """The preamble and the script's module-level imports, as one program."""
  with open(script) as f:
    tree = ast.parse(f.read(), filename=script)
  imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
  return PREAMBLE + "\n".join(ast.unparse(n) for n in imports)


def jobs(log: str) -> list[tuple[str, float]]:
  """(rule, seconds) of every finished job of a Snakemake log."""
  started, out, stamp, rule = {}, [], None, None
  for line in log.splitlines():
    if m := re.match(r"\[(\w{3} \w{3} +\d+ [\d:]+ \d{4})\]", line):
      stamp = datetime.datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
    elif m := re.match(r"(?:local)?rule (\w+):", line):
      rule = m.group(1)
    elif (m := re.match(r"\s+jobid: (\d+)", line)) and rule:
      started[m.group(1)] = (rule, stamp)
      rule = None
    elif (m := re.search(r"Finished jobid: (\d+)", line)) and m.group(1) in started:
      r, t = started.pop(m.group(1))
      out.append((r, (stamp - t).total_seconds()))
  return out


def import_seconds(code: str, cwd: str, repeats: int = 3) -> float:
  """Median seconds of a fresh interpreter running `code` in `cwd` (the
  project: `-c` puts the working directory first on sys.path)."""
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, cwd=cwd)
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("project")
  parser.add_argument("--out", default=None)
  args = parser.parse_args()
  logs = sorted(glob.glob(os.path.join(args.project, ".snakemake", "log", "*.snakemake.log")))
  if not logs:
    parser.error(f"no Snakemake log under {args.project}/.snakemake/log")
  text = open(logs[-1]).read()
  done = [j for j in jobs(text) if j[0] != "all"]
  wall = re.findall(r"\[(\w{3} \w{3} +\d+ [\d:]+ \d{4})\]", text)
  parse = lambda s: datetime.datetime.strptime(s, "%a %b %d %H:%M:%S %Y")
  wall = (parse(wall[-1]) - parse(wall[0])).total_seconds()
  per_rule = {}
  for rule, seconds in done:
    per_rule.setdefault(rule, []).append(seconds)
  scripts = rule_scripts(args.project)
  if missing := sorted(set(per_rule) - set(scripts)):
    # No metadata (temporary outputs, a shell rule): Python's start alone.
    print(f"no script recorded for {missing}: charged the preamble only", file=sys.stderr)
  codes = {r: start_code(scripts[r]) if r in scripts else PREAMBLE for r in per_rule}
  startup = {c: import_seconds(c, args.project) for c in sorted(set(codes.values()))}
  charged = {r: startup[codes[r]] for r in per_rule}
  job_seconds = sum(s for _, s in done)
  start_total = sum(charged[r] * len(v) for r, v in per_rule.items())
  result = {
      "log": logs[-1],
      "wall_s": wall,
      "jobs": len(done),
      "job_seconds": job_seconds,
      "startup_s": start_total,
      "startup_share": start_total / job_seconds,
      "per_rule": {
          r: {"jobs": len(v), "seconds": sum(v), "startup_s_per_job": charged[r]}
          for r, v in per_rule.items()
      },
  }
  print(
      f"{result['jobs']} jobs, {wall:.0f} s wall (first to last log stamp), "
      f"{job_seconds:.0f} job-seconds; start-up {start_total:.0f} s, "
      f"{100 * result['startup_share']:.1f}% of the job-seconds"
  )
  print(f"  {'rule':24s} {'jobs':>4s} {'seconds':>8s} {'start-up per job':>17s}")
  for rule, v in sorted(per_rule.items(), key=lambda kv: -sum(kv[1])):
    print(f"  {rule:24s} {len(v):4d} {sum(v):8.0f} {charged[rule]:15.2f} s")
  if args.out:
    with open(args.out, "w") as f:
      json.dump(result, f, indent=1)


if __name__ == "__main__":
  main()
