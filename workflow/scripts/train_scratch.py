"""Figure 11 (i): a model of one (setting, seed) trained from random
initialisation for its own epochs, every epoch kept."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

import jax
import pandas as pd

from manifold_metric import io, tracks, train

w, p = snakemake.wildcards, snakemake.params
seed = int(w.seed)
ds = tracks.load_dataset(snakemake.input.data)
arch = tracks.build_arch(p.model, ds)
paths = dict(zip(range(1, p.epochs + 1), snakemake.output.checkpoints))
_, history = train.fit(arch, tracks.init(arch, jax.random.key(seed), ds), ds, hp=p.train,
                       seed=seed, epochs=p.epochs, run=f"scratch {w.setting} seed {seed}",
                       on_epoch=lambda t, v, r: io.save_checkpoint(paths[t], arch, v, r))
io.write_table(pd.DataFrame(history).assign(setting=w.setting, seed=seed), snakemake.output.log)
