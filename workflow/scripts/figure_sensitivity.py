"""Figures 6 and 8: Kendall tau of M_0 with G_T* over the (q, n) grid."""

import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

from manifold_metric import plots, tables

plots.save(plots.sensitivity([tables.read_table(f) for f in snakemake.input]), *snakemake.output)
