"""Figure 1: loss along the linear path between permuted minima, per model."""

import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

from manifold_metric import plots, tables

plots.save(plots.figure1(tables.read_table(snakemake.input[0])), *snakemake.output)
