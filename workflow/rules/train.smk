# Image models train to early stopping; BERT for a fixed number of epochs,
# keeping each (Figure 11's run from random initialisation).
rule train_base:
    input:
        data=get_dataset_npz,
    output:
        checkpoint="results/base/{setting}/seed{seed}.msgpack",
        log="results/base/{setting}/seed{seed}.log.parquet",
    wildcard_constraints:
        setting=alternatives(IMAGE_SETTINGS),
    params:
        model=get_model,
        train=config["train"],
        base=config["base"],
    log:
        "logs/base/{setting}/seed{seed}.log",
    script:
        "../scripts/train_base.py"


use rule train_base as train_base_lm with:
    output:
        checkpoint="results/base/{setting}/seed{seed}.msgpack",
        log="results/base/{setting}/seed{seed}.log.parquet",
        scratch=[
            f"results/scratch/{{setting}}/seed{{seed}}/epoch{e:04d}.msgpack"
            for e in LM_BASE_EPOCHS
        ],
    wildcard_constraints:
        setting=alternatives(LM_SETTINGS),
    params:
        model=get_model,
        train=config["lm"].get("train"),
        base=config["lm"].get("base"),
        save=LM_BASE_EPOCHS,


rule expand_candidate:
    input:
        data=get_dataset_npz,
        base="results/base/{setting}/seed{seed}.msgpack",
    output:
        "results/expanded/{setting}/{expansion}/seed{seed}.msgpack",
    params:
        expansion=get_expansion,
        train=get_train_hp,
    log:
        "logs/expanded/{setting}/{expansion}/seed{seed}.log",
    script:
        "../scripts/expand_candidate.py"


rule train_candidate:
    input:
        data=get_dataset_npz,
        expanded="results/expanded/{setting}/{expansion}/seed{seed}.msgpack",
    output:
        checkpoints=[
            f"results/checkpoints/{{setting}}/{{expansion}}/seed{{seed}}/epoch{e:04d}.msgpack"
            for e in EPOCHS[1:]
        ],
        log="results/checkpoints/{setting}/{expansion}/seed{seed}/log.parquet",
    wildcard_constraints:
        setting=alternatives(IMAGE_SETTINGS),
    params:
        train=config["train"],
        epochs=config["candidate"]["epochs"],
        save=EPOCHS[1:],
    log:
        "logs/checkpoints/{setting}/{expansion}/seed{seed}.log",
    script:
        "../scripts/train_candidate.py"


use rule train_candidate as train_candidate_lm with:
    output:
        checkpoints=[
            f"results/checkpoints/{{setting}}/{{expansion}}/seed{{seed}}/epoch{e:04d}.msgpack"
            for e in LM_EPOCHS[1:]
        ],
        log="results/checkpoints/{setting}/{expansion}/seed{seed}/log.parquet",
    wildcard_constraints:
        setting=alternatives(LM_SETTINGS),
    params:
        train=config["lm"].get("train"),
        epochs=config["lm"]["candidate"]["epochs"],
        save=LM_EPOCHS[1:],
