"""Trains the base model phi* of one (setting, seed) until early stopping."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

import jax
import pandas as pd

from manifold_metric import data, io, models, train

w, p = snakemake.wildcards, snakemake.params
seed = int(w.seed)
ds = data.load_npz(snakemake.input.data)
arch = models.default_arch(p.model["kind"], int(ds["num_classes"]),
                           **{k: v for k, v in p.model.items() if k != "kind"})
variables = models.init(arch, jax.random.key(seed), ds["x_train"].shape[1:])
best, history = train.fit_base(arch, variables, ds, hp=p.train, seed=seed,
                               max_epochs=p.base["max_epochs"], patience=p.base["patience"],
                               run=f"base {w.setting} seed {seed}")
acc = train.accuracy(arch, best, ds["x_val"], ds["y_val"])
print(f"best validation accuracy {acc:.4f}", file=sys.stderr)
io.write_table(pd.DataFrame(history).assign(setting=w.setting, seed=seed),
               snakemake.output.log)
io.save_checkpoint(snakemake.output.checkpoint, arch, best, {"val_acc": acc, "seed": seed})
