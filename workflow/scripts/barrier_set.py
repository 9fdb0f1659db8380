"""Barrier sets B = {|b_i|} (Algorithm 1) of several checkpoints of one seed."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

from manifold_metric import io, protocol, tracks

w, p = snakemake.wildcards, snakemake.params
table = protocol.barrier_table(
    [(e, epoch, path) for (e, epoch), path in zip(p.labels, snakemake.input.checkpoints)],
    tracks.load_dataset(snakemake.input.data), setting=w.setting, seed=int(w.seed), n=p.n,
    batch_size=p.batch_size, group=p.group, chunk=p.chunk)
io.write_table(table, snakemake.output[0])
