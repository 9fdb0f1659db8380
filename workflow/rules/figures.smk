rule loss_curves:
    input:
        unpack(get_figure1_checkpoints),
        data=lambda w: f"results/data/{SETTINGS[config['figures']['figure1']['setting']]['dataset']}.npz",
    output:
        "results/curves/figure1.parquet",
    params:
        alphas=config["figures"].get("figure1", {}).get("alphas", 21),
        pairs=config["figures"].get("figure1", {}).get("pairs", 20),
        batch_size=config["metric"]["batch_size"],
        seeds=SEEDS,
    log:
        "logs/curves/figure1.log",
    script:
        "../scripts/loss_curves.py"


rule figure1:
    input:
        "results/curves/figure1.parquet",
    output:
        png="results/figures/figure1.png",
        pdf="results/figures/figure1.pdf",
    log:
        "logs/figures/figure1.log",
    script:
        "../scripts/figure1.py"


rule figure3:
    input:
        metrics=figure_tables("metrics", "figure3"),
        correlations=figure_tables("correlations", "figure3"),
    output:
        png="results/figures/figure3.png",
        pdf="results/figures/figure3.pdf",
    params:
        main_q=config["metric"]["main_q"],
        main_n=config["metric"]["main_n"],
    log:
        "logs/figures/figure3.log",
    script:
        "../scripts/figure3.py"


rule figure2:
    input:
        figure_tables("correlations", "figure2"),
    output:
        png="results/figures/figure2.png",
        pdf="results/figures/figure2.pdf",
    params:
        methods=["kendall"],
    log:
        "logs/figures/figure2.log",
    script:
        "../scripts/figure_bars.py"


rule figure7:
    input:
        figure_tables("correlations", "figure7"),
    output:
        png="results/figures/figure7.png",
        pdf="results/figures/figure7.pdf",
    params:
        methods=["spearman", "pearson"],
    log:
        "logs/figures/figure7.log",
    script:
        "../scripts/figure_bars.py"


rule figure_sensitivity:
    input:
        figure_tables("sensitivity"),
    output:
        png="results/figures/{figure}.png",
        pdf="results/figures/{figure}.pdf",
    wildcard_constraints:
        figure="figure6|figure8",
    log:
        "logs/figures/{figure}.log",
    script:
        "../scripts/figure_sensitivity.py"


rule figure4:
    input:
        figure_tables("metrics", "figure4"),
    output:
        png="results/figures/figure4.png",
        pdf="results/figures/figure4.pdf",
    params:
        main_q=config["metric"]["main_q"],
        main_n=config["metric"]["main_n"],
    log:
        "logs/figures/figure4.log",
    script:
        "../scripts/figure4.py"


use rule figure3 as figure5 with:
    input:
        metrics=figure_tables("metrics", "figure5"),
        correlations=figure_tables("correlations", "figure5"),
    output:
        png="results/figures/figure5.png",
        pdf="results/figures/figure5.pdf",
    log:
        "logs/figures/figure5.log",


rule figure11:
    input:
        scratch=figure_tables("scratch", "figure11"),
        heads=figure_tables("metrics", "figure11", suffix=".heads_0"),
    output:
        png="results/figures/figure11.png",
        pdf="results/figures/figure11.pdf",
    params:
        main_q=config["metric"]["main_q"],
        main_n=config["metric"]["main_n"],
    log:
        "logs/figures/figure11.log",
    script:
        "../scripts/figure11.py"
