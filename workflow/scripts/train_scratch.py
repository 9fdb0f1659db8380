"""Figure 11 (i): a model of every seed of one setting trained from random
initialisation for its own epochs, every epoch kept."""

import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

import pandas as pd

from manifold_metric import checkpoints, tables, tracks, train

w, p = snakemake.wildcards, snakemake.params
ds = tracks.load_dataset(snakemake.input.data)
arch = tracks.build_arch(p.model, ds)


def save(t, variables, records):
  paths = [p.template.format(setting=w.setting, seed=s, epoch=f"{t:04d}") for s in p.seeds]
  checkpoints.save_seeds(paths, arch, variables, records)


_, histories = train.fit(
    arch,
    tracks.init_seeds(arch, p.seeds, ds),
    ds,
    hp=p.train,
    seeds=p.seeds,
    epochs=p.epochs,
    run=f"scratch {w.setting}",
    on_epoch=save,
)
for seed, history, path in zip(p.seeds, histories, snakemake.output.logs):
  tables.write_table(pd.DataFrame(history).assign(setting=w.setting, seed=seed), path)
