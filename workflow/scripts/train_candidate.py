"""One candidate of one setting, every seed in one program: phi* expanded
into theta^(0) (checked to preserve the validation performance), then
trained for T epochs, the configured epochs saved."""

import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

import pandas as pd

from manifold_metric import checkpoints, expansion, tables, tracks, train

w, p, out = snakemake.wildcards, snakemake.params, snakemake.output
ds = tracks.load_dataset(snakemake.input.data)
arch, phi, metas = checkpoints.load_stacked(snakemake.input.base)
perf = [m["performance"] for m in metas]
arch, theta = expansion.candidates(
    arch, phi, p.expansion, p.seeds, ds, p.train, perf, f"expansion {w.expansion} of {w.setting}"
)
metas = [{**m, "expansion": p.expansion} for m in metas]
checkpoints.save_seeds(out.expanded, arch, theta, metas)


def save(t, variables, records):
  if t in p.save:
    paths = [
        p.template.format(setting=w.setting, expansion=w.expansion, seed=s, epoch=f"{t:04d}")
        for s in p.seeds
    ]
    checkpoints.save_seeds(paths, arch, variables, [{**m, **r} for m, r in zip(metas, records)])


_, histories = train.fit(
    arch,
    theta,
    ds,
    hp=p.train,
    seeds=[train.candidate_seed(s) for s in p.seeds],
    epochs=p.epochs,
    run=f"{w.setting}/{w.expansion}",
    on_epoch=save,
)
for seed, history, a, path in zip(p.seeds, histories, perf, out.logs):
  tables.write_table(
      pd.DataFrame(train.run_log(history, a)).assign(
          setting=w.setting, expansion=w.expansion, seed=seed
      ),
      path,
  )
