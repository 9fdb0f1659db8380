"""Figure 11: (i) M_t of a BERT trained from random initialisation; (ii)
M_t of the expanded BERTs with attention heads permuted."""

import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

from manifold_metric import plots, tables

p, i = snakemake.params, snakemake.input
rows = [
    (s, tables.read_table(a), tables.read_table(b))
    for s, a, b in zip(p.settings, i.scratch, i.heads)
]
plots.save(plots.figure11(rows, p.main_q, p.main_n), *snakemake.output)
