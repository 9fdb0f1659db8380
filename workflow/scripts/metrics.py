"""The metric table of one setting: M_t over the (q, n) grid, G_t, G_T*, SoTL-E."""

import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

import pandas as pd

from manifold_metric import gain, metric, tables

p = snakemake.params
barriers = pd.concat([tables.read_table(f) for f in snakemake.input.barriers], ignore_index=True)
gains = gain.gains(
    pd.concat([tables.read_table(f) for f in snakemake.input.logs], ignore_index=True)
)
table = metric.table(barriers, gains, p.q, p.n, p.groups["first"], p.groups["hidden"])
print(
    table.groupby(["group", "walk", "expansion", "epoch"])[["M", "zero", "gain"]].mean(),
    file=sys.stderr,
)
print(f"best vs worst G_T*: {gain.paired_difference(gains)}", file=sys.stderr)
tables.write_table(table, snakemake.output[0])
