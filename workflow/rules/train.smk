# phi*: image models to early stopping, BERT for a fixed number of epochs.
rule train_base:
    input:
        data=get_dataset_npz,
    output:
        checkpoint=P.base,
        log=P.base_log,
    params:
        model=get_model,
        train=get_train_hp,
        base=get_base,
        code=code("train_base.py"),
    log:
        "logs/base/{setting}/seed{seed}.log",
    script:
        "../scripts/train_base.py"


# Figure 11 (i): a BERT trained from random initialisation, every epoch kept.
rule train_scratch:
    input:
        data=get_dataset_npz,
    output:
        checkpoints=expand(P.scratch, epoch=map(epoch_name, SCRATCH_EPOCHS), allow_missing=True),
        log=P.scratch_log,
    wildcard_constraints:
        setting=alternatives(LM_SETTINGS),
    params:
        model=get_model,
        train=get_train_hp,
        epochs=LM.get("scratch", {}).get("epochs"),
        code=code("train_scratch.py"),
    log:
        "logs/scratch/{setting}/seed{seed}.log",
    script:
        "../scripts/train_scratch.py"


rule expand_candidate:
    input:
        data=get_dataset_npz,
        base=P.base,
    output:
        P.expanded,
    params:
        expansion=get_expansion,
        train=get_train_hp,
        code=code("expand_candidate.py"),
    log:
        "logs/expanded/{setting}/{expansion}/seed{seed}.log",
    script:
        "../scripts/expand_candidate.py"


# The checkpoints kept differ per track (config candidate / lm.candidate).
rule train_candidate:
    input:
        data=get_dataset_npz,
        expanded=P.expanded,
    output:
        checkpoints=expand(P.trained, epoch=map(epoch_name, EPOCHS[1:]), allow_missing=True),
        log=P.run_log,
    wildcard_constraints:
        setting=alternatives(IMAGE_SETTINGS),
    params:
        train=get_train_hp,
        epochs=config["candidate"]["epochs"],
        save=EPOCHS[1:],
        code=code("train_candidate.py"),
    log:
        "logs/checkpoints/{setting}/{expansion}/seed{seed}.log",
    script:
        "../scripts/train_candidate.py"


use rule train_candidate as train_candidate_lm with:
    output:
        checkpoints=expand(P.trained, epoch=map(epoch_name, LM_EPOCHS[1:]), allow_missing=True),
        log=P.run_log,
    wildcard_constraints:
        setting=alternatives(LM_SETTINGS),
    params:
        train=get_train_hp,
        epochs=LM.get("candidate", {}).get("epochs"),
        save=LM_EPOCHS[1:],
        code=code("train_candidate.py"),
