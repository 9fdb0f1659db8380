"""Barrier sets of every candidate's trained checkpoints, every seed and
epoch of one setting, every group of phi*, both walks."""

import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

import numpy as np

from manifold_metric import archs, barrier_tables, checkpoints, tables, tracks

w, p = snakemake.wildcards, snakemake.params
ds = tracks.load_dataset(snakemake.input.data)
base = tracks.build_arch(p.model, ds)
labels = [tuple(label) for label in p.labels]
models = []
for e, spec in p.expansions.items():
  mine = [
      (seed, epoch, path)
      for (x, seed, epoch), path in zip(labels, snakemake.input.checkpoints)
      if x == e
  ]
  arch, variables, _ = checkpoints.load_stacked([path for _, _, path in mine])
  models.append(
      barrier_tables.Models(
          e,
          arch,
          variables,
          np.array([p.seeds.index(s) for s, _, _ in mine]),
          np.array([epoch for _, epoch, _ in mine]),
          archs.expanded(base, spec)[1],
      )
  )
table = barrier_tables.table(
    models,
    ds,
    setting=w.setting,
    seeds=p.seeds,
    groups=list(base.groups()),
    n=p.n,
    batch_size=p.batch_size,
    chunk=p.chunk,
)
for seed, path in zip(p.seeds, snakemake.output):
  tables.write_table(table[table.seed == seed], path)
