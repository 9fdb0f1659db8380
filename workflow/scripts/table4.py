"""Table 4: seconds to compute each score on one checkpoint with one batch,
measured in one process after compilation."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

import jax
import pandas as pd

from manifold_metric import files, io, protocol, tracks

p = snakemake.params
device = str(jax.devices()[0])
rows = []
for setting in p.settings:
  ds = tracks.load_dataset(snakemake.input[f"data_{setting}"])
  arch, variables, meta = io.load_checkpoint(snakemake.input[setting])
  times = protocol.time_scores(arch, variables, ds, seed=p.seed[setting], n=p.n,
                               batch_size=p.batch_size[setting], chunk=p.chunk)
  print(f"{setting}: {times}", file=sys.stderr)
  rows += [{"setting": setting, "model": arch["kind"], "expansion": str(meta["expansion"]),
            "metric": k, "computation": protocol.COMPUTATION[k], "seconds": v, "n": p.n,
            "batch_size": p.batch_size[setting], "device": device} for k, v in times.items()]
table = pd.DataFrame(rows)
io.write_table(table, snakemake.output.parquet)
with files.atomic_path(snakemake.output.md) as tmp, open(tmp, "w") as f:
  f.write(protocol.table4_markdown(table))
