"""Figure 11 (i): barrier sets of every epoch of the runs from random
initialisation, every seed of one setting, the first group, both walks."""

import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

import numpy as np

from manifold_metric import archs, barrier_tables, checkpoints, tables, tracks

w, p = snakemake.wildcards, snakemake.params
ds = tracks.load_dataset(snakemake.input.data)
arch, variables, _ = checkpoints.load_stacked(snakemake.input.checkpoints)
seed_of = np.array([p.seeds.index(seed) for seed, _ in p.labels])
epochs = np.array([epoch for _, epoch in p.labels])
group = archs.first_group(arch)
table = barrier_tables.table(
    [barrier_tables.Models("scratch", arch, variables, seed_of, epochs, {group: group})],
    ds,
    setting=w.setting,
    seeds=p.seeds,
    groups=[group],
    n=p.n,
    batch_size=p.batch_size,
    chunk=p.chunk,
)
for seed, path in zip(p.seeds, snakemake.output):
  tables.write_table(table[table.seed == seed], path)
