"""Figures 3, 5 and 9: G_t, M_t and the Kendall tau of M_t and -SoTL-E with
G_T* over epochs, one row per setting."""

import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

from manifold_metric import plots, tables

p, i = snakemake.params, snakemake.input
rows = [
    (s, tables.read_table(m), tables.read_table(c))
    for s, m, c in zip(p.settings, i.metrics, i.correlations)
]
plots.save(plots.over_epochs(rows, p.main_q, p.main_n), *snakemake.output)
