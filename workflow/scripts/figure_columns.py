"""Figures 4 and 10: G_t and M_t over training, one column per setting, or
per expansion kind of each setting (by_kind)."""

import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

from manifold_metric import plots, tables

p = snakemake.params
panels = []
for setting, path in zip(p.settings, snakemake.input):
  table = tables.read_table(path)
  if not p.by_kind:
    panels.append((setting, table))
    continue
  kinds = table.expansion.map(p.kinds[setting])
  panels += [(f"{setting}: {kind}", table[kinds == kind]) for kind in dict.fromkeys(kinds)]
plots.save(plots.columns(panels, p.main_q, p.main_n), *snakemake.output)
