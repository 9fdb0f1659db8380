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
        metrics=get_figure3_metrics,
        correlations=lambda w: [f"results/correlations/{s}.parquet"
                                for s in config["figures"]["figure3"]["settings"]],
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
