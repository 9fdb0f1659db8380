"""The metric table of one setting: M_t over the (q, n) grid, G_t, G_T*, SoTL-E."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

import pandas as pd

from manifold_metric import gain, io, metric

p = snakemake.params
barriers = pd.concat([io.read_table(f) for f in snakemake.input.barriers], ignore_index=True)
gains = gain.gains(pd.concat([io.read_table(f) for f in snakemake.input.logs], ignore_index=True))
table = metric.table(barriers, gains, p.q, p.n)
print(table.groupby(["expansion", "epoch"])[["M", "gain"]].mean(), file=sys.stderr)
print(f"best vs worst G_T*: {gain.paired_difference(gains)}", file=sys.stderr)
io.write_table(table, snakemake.output[0])
