"""Rank correlations of every score with G_T* across the candidates of one
setting, per seed and epoch, and Kendall's tau of M_0 over the (q, n) grid."""

import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

from manifold_metric import correlation, tables

p = snakemake.params
metrics = tables.read_table(snakemake.input.metrics)
scores = tables.read_table(snakemake.input.scores)
table = correlation.score_table(metrics, scores, p.main_q, p.main_n)
once = [c for c in scores.columns if c not in ("setting", "expansion", "seed", "epoch")]
corr = correlation.setting_correlations(table, once)
print(
    correlation.summarize(corr).query("method == 'kendall' and epoch == 0").to_string(),
    file=sys.stderr,
)
tables.write_table(corr, snakemake.output.correlations)
tables.write_table(correlation.sensitivity(metrics), snakemake.output.sensitivity)
