"""Figure 11 (i): M_t of a model trained from random initialisation,
relative to its epoch 1."""

import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

import pandas as pd

from manifold_metric import metric, tables

p = snakemake.params
barriers = pd.concat([tables.read_table(f) for f in snakemake.input], ignore_index=True)
table = metric.scratch_table(barriers, p.q, p.n)
print(table.groupby(["q", "epoch"]).M.mean().unstack(0), file=sys.stderr)
tables.write_table(table, snakemake.output[0])
