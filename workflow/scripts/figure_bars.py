"""Figures 2 and 7: correlation of every score at t = 0 with G_T*, per setting."""

import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

import pandas as pd

from manifold_metric import plots, tables

p = snakemake.params
corr = pd.concat([tables.read_table(f) for f in snakemake.input.correlations], ignore_index=True)
metrics = {s: tables.read_table(f) for s, f in zip(p.settings, snakemake.input.metrics)}
plots.save(plots.bars(corr, metrics, p.methods), *snakemake.output)
