"""Rank correlations between each score and G_T* across candidates, per seed
and epoch (the manifold metric at every q with n = main_n, SoTL-E, and the
zero-cost proxies at t = 0), and the Kendall tau of M_0 over the whole
(q, n) grid (sensitivity)."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

from manifold_metric import correlation, io

p = snakemake.params
table = io.read_table(snakemake.input.metrics)
keys = ["setting", "expansion", "seed", "epoch"]
outcome = table.drop_duplicates(keys).set_index(keys)[["sotl_e", "gain_best"]]


def wide(rows, name):
  return rows.pivot_table(index=keys, columns=["q", "n"], values="M").pipe(
      lambda w: w.set_axis([name(q, n) for q, n in w.columns], axis=1))


main = wide(table[table.n == p.main_n], lambda q, n: f"manifold_q{q:g}")
main["manifold"] = main[f"manifold_q{p.main_q:g}"]
main = main.join(outcome).reset_index()
if snakemake.input.proxies:
  scores = io.read_table(snakemake.input.proxies[0]).query("expansion != 'base'")
  main = main.merge(scores, on=keys, how="left")
score_cols = [c for c in main.columns if c not in keys + ["gain_best"]]
corr = correlation.correlations(main, score_cols, "gain_best")
corr = corr.dropna(subset=["value"]) if snakemake.input.proxies else corr
print(correlation.summarize(corr).query("method == 'kendall' and epoch == 0").to_string(),
      file=sys.stderr)
io.write_table(corr, snakemake.output.correlations)

grid = wide(table[table.epoch == 0], lambda q, n: f"{q:g}|{n}").join(outcome).reset_index()
sens = correlation.correlations(grid, [c for c in grid.columns if "|" in str(c)], "gain_best",
                                methods=("kendall",))
qn = sens.metric.str.split("|", expand=True)
sens = sens.assign(q=qn[0].astype(float), n=qn[1].astype(int)).drop(columns="metric")
io.write_table(sens, snakemake.output.sensitivity)
