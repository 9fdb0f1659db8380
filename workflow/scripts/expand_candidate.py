"""Net2Net-expands phi* into one candidate theta^(0); checks that the
validation performance is preserved."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

import jax

from manifold_metric import expansion, io, tracks, train

w, p = snakemake.wildcards, snakemake.params
ds = tracks.load_dataset(snakemake.input.data)
arch, variables, meta = io.load_checkpoint(snakemake.input.base)
new_arch, new_vars = expansion.expand(arch, variables, p.expansion, jax.random.key(int(w.seed)))
perf = train.performance(new_arch, new_vars, ds, p.train)
tracks.check_preserved(arch, meta["performance"], perf,
                       f"expansion {w.expansion} of {snakemake.input.base}")
print(f"{w.expansion}: {arch} -> {new_arch}, performance {perf:.6f} preserved", file=sys.stderr)
io.save_checkpoint(snakemake.output[0], new_arch, new_vars, {**meta, "expansion": p.expansion})
