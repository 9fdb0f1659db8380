"""Pieces shared by the workflow's figure scripts (matplotlib, headless)."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)


def gain_and_metric(ax_gain, ax_metric, table, q: float, n: int):
  """G_t (percent points, a star at its best) and M_t +- std over seeds per
  expansion over epochs, from a metrics table, at one (q, n)."""
  main = table[(table.q == q) & (table.n == n)]
  for expansion, t in main.groupby("expansion", sort=False):
    stats = t.groupby("epoch")[["gain", "M"]].agg(["mean", "std"])
    gain = 100 * stats["gain"]["mean"]
    line, = ax_gain.plot(stats.index, gain, label=expansion)
    ax_gain.plot(gain.idxmax(), gain.max(), "*", color=line.get_color(), ms=10)
    ax_metric.errorbar(stats.index, stats["M"]["mean"], stats["M"]["std"], capsize=2,
                       color=line.get_color(), label=expansion)
  setting = main.setting.iloc[0]
  ax_gain.set(title=f"{setting}: gain $G_t$ (%)", xlabel="epoch t")
  ax_metric.set(title=f"$M_t$ (q={q:g}, n={n})", xlabel="epoch t")
  ax_gain.legend(fontsize=7)


def save(fig, output):
  """Writes the figure to the rule's png and pdf outputs."""
  fig.savefig(output.png, dpi=150, bbox_inches="tight")
  fig.savefig(output.pdf, bbox_inches="tight")
  plt.close(fig)
