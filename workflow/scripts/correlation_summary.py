"""Mean, standard deviation and 95% bootstrap interval over seeds of every
correlation, and its paired difference to size's and width's."""

import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

import pandas as pd

from manifold_metric import correlation, tables

summary = correlation.summarize(
    pd.concat([tables.read_table(f) for f in snakemake.input], ignore_index=True)
)
print(summary.query("epoch == 0 and method == 'kendall'").to_string(), file=sys.stderr)
tables.write_table(summary, snakemake.output[0])
