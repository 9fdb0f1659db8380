"""Barrier sets at t = 0 of phi* and of every candidate theta^(0) (expanded
here from phi*), every seed of one setting, every group of phi*, both walks."""

import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

import numpy as np

from manifold_metric import archs, barrier_tables, checkpoints, expansion, tables, tracks

w, p = snakemake.wildcards, snakemake.params
ds = tracks.load_dataset(snakemake.input.data)
arch, phi, metas = checkpoints.load_stacked(snakemake.input.base)
index, zeros = np.arange(len(p.seeds)), np.zeros(len(p.seeds), int)
models = [barrier_tables.Models("base", arch, phi, index, zeros, {g: g for g in arch.groups()})]
theta0 = expansion.setting_candidates(
    arch, phi, metas, p.expansions, p.seeds, ds, p.train, w.setting
)
for e, (new_arch, theta) in theta0.items():
  models.append(
      barrier_tables.Models(
          e, new_arch, theta, index, zeros, archs.expanded(arch, p.expansions[e])[1]
      )
  )
table = barrier_tables.table(
    models,
    ds,
    setting=w.setting,
    seeds=p.seeds,
    groups=list(arch.groups()),
    n=p.n,
    batch_size=p.batch_size,
    chunk=p.chunk,
)
for seed, path in zip(p.seeds, snakemake.output):
  tables.write_table(table[table.seed == seed], path)
