"""`snakemake --report results/report.html`: one self-contained HTML file
holding every figure the config builds, every caption, the rankings and the
tables, grouped into categories."""

import base64
import json
import re
from html.parser import HTMLParser

import pytest
import yaml

from tests.workflow import ROOT, snakemake

CAPTIONS = ROOT / "workflow" / "report"


@pytest.fixture(scope="module")
def built(small_study):
  """The report of the small study (which draws every figure, so that every
  caption is rendered)."""
  snakemake(small_study, "--report", "results/report.html")
  html = (small_study / "results" / "report.html").read_text(encoding="utf-8")
  config = yaml.safe_load((small_study / "config" / "config.yaml").read_text())
  return small_study, config, html


def script_var(html: str, name: str):
  """The JSON the report template assigns to `var name` in its own script
  (`<script id="results">var results = {...};`)."""
  tag = name.replace("_", "-")
  m = re.search(rf'<script id="{tag}">\s*var {name} = (.*);$', html, re.M)
  assert m, f"no `var {name}` in the report"
  return json.loads(m.group(1))


class Refs(HTMLParser):
  """Every URL an element's src, href or srcset points to (script and style
  bodies are not parsed as markup)."""

  def __init__(self):
    super().__init__()
    self.tags, self.urls = [], []

  def handle_starttag(self, tag, attrs):
    self.tags.append(tag)
    self.urls += [v for k, v in attrs if k in ("src", "href", "srcset", "data") and v]


def refs(html: str) -> Refs:
  r = Refs()
  r.feed(html)
  return r


def remote(urls):
  return [u for u in urls if re.match(r"\s*(https?:)?//", u, re.I)]


def test_one_html_file_with_every_figure_embedded(built):
  p, config, html = built
  assert not (p / "results" / "report.zip").exists()
  results = script_var(html, "results")
  for fig in config["figures"]:
    path = f"results/figures/{fig}.png"
    assert path in results, f"{fig} is not in the report"
    entry = results[path]
    assert entry["mime_type"] == "image/png"
    head, data = entry["data_uri"].split(",", 1)
    assert head.startswith("data:image/png;") and head.endswith(";base64")
    assert base64.b64decode(data) == (p / path).read_bytes()
  # The pdfs stay files beside the pngs, not in the report.
  assert not [r for r in results if r.endswith(".pdf")]


def test_outputs_are_grouped_by_figure_setting_and_table(built):
  _, config, html = built
  categories = script_var(html, "categories")
  settings = list(config["settings"])
  assert set(categories) == {"Figures", "Rankings", "Tables", "Per-setting tables"}
  figures = categories["Figures"]
  assert len(figures) == len(config["figures"])
  for fig in config["figures"]:
    number = fig[len("figure") :]
    [sub] = [s for s in figures if s.startswith(f"Figure {number}: ")]
    assert figures[sub] == [f"results/figures/{fig}.png"]
  assert {s: sorted(v) for s, v in categories["Rankings"].items()} == {
      s: [
          f"results/rankings/{s}.md",
          f"results/rankings/{s}.outcome.md",
          f"results/rankings/{s}.parquet",
      ]
      for s in settings
  }
  assert {s: sorted(v) for s, v in categories["Per-setting tables"].items()} == {
      s: sorted(
          f"results/{kind}/{s}.parquet" for kind in ("correlations", "proxies", "sensitivity")
      )
      for s in settings
  }
  assert sorted(categories["Tables"]["Table 4: seconds per score"]) == [
      "results/tables/table4.md",
      "results/tables/table4.parquet",
  ]
  assert categories["Tables"]["Correlations over seeds"] == [
      "results/tables/correlations_summary.parquet"
  ]
  results = script_var(html, "results")
  assert results["results/figures/figure2.png"]["labels"] == {
      "figure": "Figure 2",
      "settings": ", ".join(config["figures"]["figure2"]["settings"]),
  }
  assert results["results/rankings/digits-mlp.md"]["labels"] == {
      "table": "candidates ranked by M_0, Markdown"
  }


def test_every_result_has_its_caption_rendered(built):
  _, config, html = built
  results = script_var(html, "results")
  for path, entry in results.items():
    caption = entry["caption"]
    assert caption.strip(), f"{path} has no caption"
    # Jinja and reStructuredText both rendered cleanly: no leftover template
    # syntax, no docutils error or warning box.
    assert "{{" not in caption and "{%" not in caption, path
    assert "system-message" not in caption and "System Message" not in caption, path
  for fig in config["figures"]:
    caption = results[f"results/figures/{fig}.png"]["caption"]
    assert f"Figure {fig[len('figure'):]}" in caption
  for s in config["settings"]:
    for ext in ("md", "parquet"):
      caption = results[f"results/rankings/{s}.{ext}"]["caption"]
      assert s in caption and "M0_sd" in caption  # the Markdown table, included
  table4 = results["results/tables/table4.md"]["caption"]
  assert "| synflow" in table4 and "SynFlow" in table4
  bars = results["results/figures/figure2.png"]["caption"]
  assert "95% percentile-bootstrap interval" in bars and "undefined" in bars and "k/n" in bars
  assert "width" in bars and "size" in bars
  outcome = results[f"results/rankings/{s}.outcome.md"]["caption"]
  assert "tau - tau(size)" in outcome and "tau - tau(width)" in outcome  # the page, included
  # Every caption file is some output's caption.
  files = {f.stem for f in CAPTIONS.glob("*.rst")} - {"workflow"}
  assert files == set(config["figures"]) | {
      "ranking",
      "outcome",
      "table4",
      "correlation_summary",
      "correlations",
      "sensitivity",
      "proxies",
  }
  desc = script_var(html, "workflow_desc")
  assert "Where to start" in desc and "free baselines" in desc
  assert "system-message" not in desc and "{{" not in desc
  for s in config["settings"]:
    assert s in desc


def test_report_needs_nothing_from_the_network(built):
  _, _, html = built
  page = refs(html)
  # Every script and style is inline: no <link>, no <script src=...>.
  assert "link" not in page.tags
  assert not page.urls, page.urls
  for style in re.findall(r"<style>(.*?)</style>", html, re.S):
    assert not re.search(r"@import|url\(\s*['\"]?(https?:)?//", style)
  results = script_var(html, "results")
  assert all(r["data_uri"].startswith("data:") for r in results.values())
  # Captions and the description become markup in the page: no remote references.
  desc = script_var(html, "workflow_desc")
  for markup in [desc, *(r["caption"] for r in results.values())]:
    assert not remote(refs(markup).urls)
