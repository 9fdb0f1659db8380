"""The candidates of one setting ranked by M_0 before any training."""

import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

import pandas as pd

from manifold_metric import files, ranking, tables

w, p = snakemake.wildcards, snakemake.params
barriers = pd.concat([tables.read_table(f) for f in snakemake.input.barriers], ignore_index=True)
table = ranking.rank(
    barriers,
    tables.read_table(snakemake.input.scores),
    p.q,
    p.n,
    p.groups["first"],
    p.groups["hidden"],
)
print(table.to_string(), file=sys.stderr)
tables.write_table(table, snakemake.output.table)
with files.atomic_path(snakemake.output.md) as tmp, open(tmp, "w") as f:
  f.write(ranking.markdown(table, w.setting, p.q, p.n))
