"""Trains one expanded candidate for T epochs, saving the configured epochs."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

from manifold_metric import gain, io, protocol, tracks, train

w, p = snakemake.wildcards, snakemake.params
seed = int(w.seed)
ds = tracks.load_dataset(snakemake.input.data)
arch, variables, meta = io.load_checkpoint(snakemake.input.expanded)
paths = dict(zip(p.save, snakemake.output.checkpoints))


def save(t, v, record):
  if t in paths:
    io.save_checkpoint(paths[t], arch, v, {**meta, **record})


_, history = train.fit(arch, variables, ds, hp=p.train, seed=protocol.candidate_seed(seed),
                       epochs=p.epochs, run=f"{w.setting}/{w.expansion} seed {seed}",
                       on_epoch=save)
io.write_table(gain.run_log(history, meta["performance"]).assign(
    setting=w.setting, expansion=w.expansion, seed=seed), snakemake.output.log)
