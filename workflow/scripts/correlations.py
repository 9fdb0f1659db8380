"""Rank correlations between each score and G_T* across candidates, per seed
and epoch: the manifold metric at every q (n = main_n) and SoTL-E."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

from manifold_metric import correlation, io

p = snakemake.params
table = io.read_table(snakemake.input[0])
keys = ["setting", "expansion", "seed", "epoch"]
main = table[table.n == p.main_n]
wide = main.pivot_table(index=keys, columns="q", values="M").rename(
    columns=lambda q: f"manifold_q{q:g}")
wide["manifold"] = wide[f"manifold_q{p.main_q:g}"]
extra = main.drop_duplicates(keys).set_index(keys)[["sotl_e", "gain_best"]]
wide = wide.join(extra).reset_index()
scores = [c for c in wide.columns if c.startswith("manifold")] + ["sotl_e"]
corr = correlation.correlations(wide, scores, "gain_best")
print(correlation.summarize(corr).query("method == 'kendall'").to_string(), file=sys.stderr)
io.write_table(corr, snakemake.output[0])
