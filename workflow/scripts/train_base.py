"""Trains the base models phi* of every seed of one setting, in one program."""

import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

import pandas as pd

from manifold_metric import checkpoints, tables, tracks, train

w, p, out = snakemake.wildcards, snakemake.params, snakemake.output
ds = tracks.load_dataset(snakemake.input.data)
arch = tracks.build_arch(p.model, ds)
phi, histories, perf = train.fit_base(
    arch,
    tracks.init_seeds(arch, p.seeds, ds),
    ds,
    hp=p.train,
    base=p.base,
    seeds=p.seeds,
    run=f"base {w.setting}",
)
print(f"phi*: performance per seed {perf}", file=sys.stderr)
for seed, history, path in zip(p.seeds, histories, out.logs):
  tables.write_table(pd.DataFrame(history).assign(setting=w.setting, seed=seed), path)
checkpoints.save_seeds(
    out.checkpoints, arch, phi, [{"performance": a, "seed": s} for a, s in zip(perf, p.seeds)]
)
