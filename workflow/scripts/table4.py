"""Table 4: seconds to compute each score on one checkpoint with one batch
(each setting's largest candidate right after expansion, its first seed),
measured in one process after compilation."""

import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

import jax
import pandas as pd

from manifold_metric import checkpoints, expansion, files, tables, timing, tracks

p = snakemake.params
device = str(jax.devices()[0])
rows = []
for setting in p.settings:
  ds = tracks.load_dataset(snakemake.input[f"data_{setting}"])
  arch, phi, _ = checkpoints.load_stacked([snakemake.input[setting]])
  seed = p.seed[setting]
  # Timed, not scored: the jobs that score this expansion check that it
  # preserves the function.
  arch, theta = expansion.expand_seeds(arch, phi, p.expansion[setting], [seed])
  times = timing.table4_times(
      arch,
      checkpoints.model_of(theta),
      ds,
      seed=seed,
      n=p.n,
      batch_size=p.batch_size[setting],
      chunk=p.chunk,
  )
  print(f"{setting}: {times}", file=sys.stderr)
  rows += [
      {
          "setting": setting,
          "model": arch.kind,
          "expansion": str(p.expansion[setting]),
          "metric": k,
          "computation": timing.COMPUTATION[k],
          "seconds": v,
          "n": p.n,
          "batch_size": p.batch_size[setting],
          "device": device,
      }
      for k, v in times.items()
  ]
table = pd.DataFrame(rows)
tables.write_table(table, snakemake.output.parquet)
with files.atomic_path(snakemake.output.md) as tmp, open(tmp, "w") as f:
  f.write(timing.table4_markdown(table))
