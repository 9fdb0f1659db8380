"""Figure 1's data: the loss along linear paths between consecutive permuted
minima of phi* and of the widened, trained candidates."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

import numpy as np
import pandas as pd

from manifold_metric import io, protocol, tracks

p = snakemake.params
ds = tracks.load_dataset(snakemake.input.data)
rows = []
for name, paths in snakemake.input.items():
  if name == "data":
    continue
  for seed, path in zip(p.seeds, paths):
    arch, variables, _ = io.load_checkpoint(path)
    rows.append(protocol.loss_curves(arch, variables, ds, seed=seed, pairs=p.pairs,
                                     alphas=np.linspace(0.0, 1.0, p.alphas),
                                     batch_size=p.batch_size).assign(model=name, seed=seed))
    print(f"{name} seed {seed}: width {rows[-1].width.iloc[0]}", file=sys.stderr)
io.write_table(pd.concat(rows, ignore_index=True), snakemake.output[0])
