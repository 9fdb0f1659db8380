# Figure 1's loss curves and every figure, each a PNG (in the report) and a PDF.


rule loss_curves:
    input:
        unpack(get_figure1_checkpoints),
        data=lambda w: P.data.format(dataset=SETTINGS[FIGURES["figure1"]["setting"]]["dataset"]),
    output:
        P.curves,
    log:
        "logs/curves/figure1.log",
    params:
        alphas=FIGURES.get("figure1", {}).get("alphas", 21),
        pairs=FIGURES.get("figure1", {}).get("pairs", 20),
        batch_size=config["metric"]["batch_size"],
        seeds=seeds_of(FIGURES["figure1"]["setting"]) if "figure1" in FIGURES else [],
        code=code("loss_curves.py"),
    script:
        "../scripts/loss_curves.py"


rule figure1:
    input:
        P.curves,
    output:
        **figure_outputs("figure1"),
    log:
        "logs/figures/figure1.log",
    params:
        code=code("figure1.py"),
    script:
        "../scripts/figure1.py"


# Figures 2 and 7: every score's correlation at t = 0 with G_T*, per setting.
rule figure2:
    input:
        correlations=figure_tables(P.correlations, "figure2"),
        metrics=figure_tables(P.metrics, "figure2"),
    output:
        **figure_outputs("figure2"),
    log:
        "logs/figures/figure2.log",
    params:
        settings=figure_settings("figure2"),
        methods=["kendall"],
        code=code("figure_bars.py"),
    script:
        "../scripts/figure_bars.py"


use rule figure2 as figure7 with:
    input:
        correlations=figure_tables(P.correlations, "figure7"),
        metrics=figure_tables(P.metrics, "figure7"),
    output:
        **figure_outputs("figure7"),
    log:
        "logs/figures/figure7.log",
    params:
        settings=figure_settings("figure7"),
        methods=["spearman", "pearson"],
        code=code("figure_bars.py"),


# Figures 3, 5 and 9: G_t, M_t and Kendall tau over epochs, a row per setting.
rule figure3:
    input:
        metrics=figure_tables(P.metrics, "figure3"),
        correlations=figure_tables(P.correlations, "figure3"),
    output:
        **figure_outputs("figure3"),
    log:
        "logs/figures/figure3.log",
    params:
        settings=figure_settings("figure3"),
        main_q=config["metric"]["main_q"],
        main_n=config["metric"]["main_n"],
        code=code("figure_epochs.py"),
    script:
        "../scripts/figure_epochs.py"


use rule figure3 as figure5 with:
    input:
        metrics=figure_tables(P.metrics, "figure5"),
        correlations=figure_tables(P.correlations, "figure5"),
    output:
        **figure_outputs("figure5"),
    log:
        "logs/figures/figure5.log",
    params:
        settings=figure_settings("figure5"),
        main_q=config["metric"]["main_q"],
        main_n=config["metric"]["main_n"],
        code=code("figure_epochs.py"),


use rule figure3 as figure9 with:
    input:
        metrics=figure_tables(P.metrics, "figure9"),
        correlations=figure_tables(P.correlations, "figure9"),
    output:
        **figure_outputs("figure9"),
    log:
        "logs/figures/figure9.log",
    params:
        settings=figure_settings("figure9"),
        main_q=config["metric"]["main_q"],
        main_n=config["metric"]["main_n"],
        code=code("figure_epochs.py"),


# Figures 4 and 10: G_t and M_t, a column per setting (or per expansion kind).
rule figure4:
    input:
        figure_tables(P.metrics, "figure4"),
    output:
        **figure_outputs("figure4"),
    log:
        "logs/figures/figure4.log",
    params:
        settings=figure_settings("figure4"),
        by_kind=FIGURES.get("figure4", {}).get("by_kind", False),
        kinds=expansion_kinds("figure4"),
        main_q=config["metric"]["main_q"],
        main_n=config["metric"]["main_n"],
        code=code("figure_columns.py"),
    script:
        "../scripts/figure_columns.py"


use rule figure4 as figure10 with:
    input:
        figure_tables(P.metrics, "figure10"),
    output:
        **figure_outputs("figure10"),
    log:
        "logs/figures/figure10.log",
    params:
        settings=figure_settings("figure10"),
        by_kind=FIGURES.get("figure10", {}).get("by_kind", False),
        kinds=expansion_kinds("figure10"),
        main_q=config["metric"]["main_q"],
        main_n=config["metric"]["main_n"],
        code=code("figure_columns.py"),


# Figures 6 and 8: Kendall tau of M_0 over the (q, n) grid.
rule figure6:
    input:
        figure_tables(P.sensitivity, "figure6"),
    output:
        **figure_outputs("figure6"),
    log:
        "logs/figures/figure6.log",
    params:
        code=code("figure_sensitivity.py"),
    script:
        "../scripts/figure_sensitivity.py"


use rule figure6 as figure8 with:
    input:
        figure_tables(P.sensitivity, "figure8"),
    output:
        **figure_outputs("figure8"),
    log:
        "logs/figures/figure8.log",


rule figure11:
    input:
        scratch=figure_tables(P.scratch_metrics, "figure11"),
        heads=figure_tables(P.metrics, "figure11"),
    output:
        **figure_outputs("figure11"),
    log:
        "logs/figures/figure11.log",
    params:
        settings=figure_settings("figure11"),
        main_q=config["metric"]["main_q"],
        main_n=config["metric"]["main_n"],
        code=code("figure11.py"),
    script:
        "../scripts/figure11.py"
