"""Figure 1's data: the loss along linear paths between consecutive permuted
minima of phi* and of the widened, trained candidates, every seed."""

import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

import numpy as np
import pandas as pd

from manifold_metric import barrier_tables, checkpoints, tables, tracks

p = snakemake.params
ds = tracks.load_dataset(snakemake.input.data)
rows = []
for name, paths in snakemake.input.items():
  if name == "data":
    continue
  arch, variables, _ = checkpoints.load_stacked(paths)
  rows.append(
      barrier_tables.loss_curves(
          arch,
          variables,
          ds,
          seeds=p.seeds,
          pairs=p.pairs,
          alphas=np.linspace(0.0, 1.0, p.alphas),
          batch_size=p.batch_size,
      ).assign(model=name)
  )
  print(f"{name}: width {rows[-1].width.iloc[0]}", file=sys.stderr)
tables.write_table(pd.concat(rows, ignore_index=True), snakemake.output[0])
