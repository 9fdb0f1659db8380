# The metric tables stay out of `snakemake --report`: in the HTML a Parquet file is
# only a download, and these are the big ones (16,000 rows a setting at the paper's
# size). The small per-setting tables below and the summaries are in it.
rule metrics:
    input:
        barriers=get_setting_barriers,
        logs=get_setting_logs,
    output:
        P.metrics,
    params:
        q=config["metric"]["q"],
        n=config["metric"]["n"],
        code=code("metrics.py"),
    log:
        "logs/metrics/{setting}.log",
    script:
        "../scripts/metrics.py"


use rule metrics as metrics_group with:
    output:
        P.metrics_group,
    log:
        "logs/metrics/{setting}.{group}.log",


# Figure 11 (i): the manifold size of a BERT over training from random
# initialisation, relative to epoch 1's.
rule scratch_metrics:
    input:
        get_scratch_barriers,
    output:
        P.scratch_metrics,
    params:
        q=config["metric"]["q"],
        n=config["metric"]["main_n"],
        code=code("scratch_metrics.py"),
    log:
        "logs/scratch/{setting}.log",
    script:
        "../scripts/scratch_metrics.py"


# Zero-cost proxies and size of phi* and every theta^(0), on the metric's batch.
rule proxies:
    input:
        unpack(get_proxy_checkpoints),
        data=get_dataset_npz,
    output:
        report(P.proxies, caption="../report/proxies.rst", category="Per-setting tables",
               subcategory="{setting}",
               labels={"table": "size and zero-cost proxies at t = 0, Parquet"}),
    params:
        batch_size=get_metric_batch_size,
        code=code("proxies.py"),
    log:
        "logs/proxies/{setting}.log",
    script:
        "../scripts/proxies.py"


rule correlations:
    input:
        metrics=P.metrics,
        scores=P.proxies,
    output:
        correlations=report(P.correlations, caption="../report/correlations.rst",
                            category="Per-setting tables", subcategory="{setting}",
                            labels={"table": "correlations of every score with G_T*, Parquet"}),
        sensitivity=report(P.sensitivity, caption="../report/sensitivity.rst",
                           category="Per-setting tables", subcategory="{setting}",
                           labels={"table": "Kendall tau of M_0 over the (q, n) grid, Parquet"}),
    params:
        main_q=config["metric"]["main_q"],
        main_n=config["metric"]["main_n"],
        code=code("correlations.py"),
    log:
        "logs/correlations/{setting}.log",
    script:
        "../scripts/correlations.py"


rule correlation_summary:
    input:
        expand(P.correlations, setting=SETTINGS),
    output:
        report(P.summary, caption="../report/correlation_summary.rst", category="Tables",
               subcategory="Correlations over seeds",
               labels={"table": "every correlation over seeds, Parquet"}),
    params:
        code=code("correlation_summary.py"),
    log:
        "logs/tables/correlations_summary.log",
    script:
        "../scripts/correlation_summary.py"


# The prediction before training: candidates ranked by M_0, with size and
# proxies beside it. Needs phi*, every theta^(0), their barrier sets and
# proxies; no candidate is trained.
rule ranking:
    input:
        barriers=get_initial_barriers,
        scores=P.proxies,
    output:
        table=report(P.ranking, caption="../report/ranking.rst", category="Rankings",
                     subcategory="{setting}",
                     labels={"table": "candidates ranked by M_0, Parquet"}),
        md=report(P.ranking_md, caption="../report/ranking.rst", category="Rankings",
                  subcategory="{setting}",
                  labels={"table": "candidates ranked by M_0, Markdown"}),
    params:
        q=config["metric"]["main_q"],
        n=config["metric"]["main_n"],
        code=code("ranking.py"),
    log:
        "logs/rankings/{setting}.log",
    script:
        "../scripts/ranking.py"


rule table4:
    input:
        unpack(get_table4_checkpoints),
        unpack(get_table4_data),
    output:
        parquet=report(P.table4, caption="../report/table4.rst", category="Tables",
                       subcategory="Table 4: seconds per score",
                       labels={"table": "seconds per score, Parquet"}),
        md=report(P.table4_md, caption="../report/table4.rst", category="Tables",
                  subcategory="Table 4: seconds per score",
                  labels={"table": "seconds per score, Markdown"}),
    params:
        settings=list(SETTINGS),
        n=config["metric"]["n_max"],
        batch_size={s: get_metric_batch_size(SimpleNamespace(setting=s)) for s in SETTINGS},
        chunk=config["metric"].get("chunk"),
        seed={s: seeds_of(s)[0] for s in SETTINGS},
        code=code("table4.py"),
    log:
        "logs/tables/table4.log",
    script:
        "../scripts/table4.py"
