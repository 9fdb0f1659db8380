"""Trains one expanded candidate for T epochs, saving the configured epochs."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

import pandas as pd

from manifold_metric import io, tasks

w, p = snakemake.wildcards, snakemake.params
seed = int(w.seed)
ds = tasks.load_dataset(snakemake.input.data)
arch, variables, meta = io.load_checkpoint(snakemake.input.expanded)
paths = dict(zip(p.save, snakemake.output.checkpoints))
# Epoch 0 is phi*'s performance: the expansion preserved it (checked).
history = [{"epoch": 0, "train_loss_sum": float("nan"), "performance": meta["performance"],
            **({} if tasks.is_lm(arch) else {"val_acc": meta["performance"]})}]


def on_epoch(t, v, record):
  history.append(record)
  if t in paths:
    io.save_checkpoint(paths[t], arch, v, {**meta, **record})


# The candidate's seed differs from its base's so batches are not replayed.
tasks.run_epochs(arch, variables, ds, hp=p.train, seed=seed + 10_000, epochs=p.epochs,
                 run=f"{w.setting}/{w.expansion} seed {seed}", on_epoch=on_epoch)
io.write_table(pd.DataFrame(history).assign(setting=w.setting, expansion=w.expansion,
                                            seed=seed), snakemake.output.log)
