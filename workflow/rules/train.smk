# Training: one job trains every seed of a setting's base (or of one
# candidate) in one vmapped program and writes each seed's files. Image and
# BERT settings have their own seeds (lm.seeds), so each rule has an `_lm`
# twin with BERT's.


# phi*: image models to early stopping, BERT for a fixed number of epochs.
rule train_base:
    input:
        data=get_dataset_npz,
    output:
        checkpoints=seed_outputs(P.base),
        logs=seed_outputs(P.base_log),
    log:
        "logs/base/{setting}.log",
    wildcard_constraints:
        setting=alternatives(IMAGE_SETTINGS),
    params:
        model=get_model,
        train=get_train_hp,
        base=get_base,
        seeds=get_seeds,
        code=code("train_base.py"),
    script:
        "../scripts/train_base.py"


use rule train_base as train_base_lm with:
    output:
        checkpoints=seed_outputs(P.base, lm=True),
        logs=seed_outputs(P.base_log, lm=True),
    wildcard_constraints:
        setting=alternatives(LM_SETTINGS),
    priority: FIRST


# Figure 11 (i): a BERT trained from random initialisation, every epoch kept.
rule train_scratch:
    input:
        data=get_dataset_npz,
    output:
        checkpoints=seed_outputs(P.scratch, lm=True, epoch=map(epoch_name, SCRATCH_EPOCHS)),
        logs=seed_outputs(P.scratch_log, lm=True),
    log:
        "logs/scratch/{setting}.log",
    wildcard_constraints:
        setting=alternatives(LM_SETTINGS),
    params:
        model=get_model,
        train=get_train_hp,
        epochs=LM.get("scratch", {}).get("epochs"),
        seeds=get_seeds,
        template=lambda w: P.scratch,
        code=code("train_scratch.py"),
    script:
        "../scripts/train_scratch.py"


# One candidate: phi* of every seed expanded (theta^(0), checked to preserve
# the validation performance), then trained for T epochs, the configured
# epochs saved.
rule train_candidate:
    input:
        data=get_dataset_npz,
        base=get_base_checkpoints,
    output:
        expanded=seed_outputs(P.expanded),
        checkpoints=seed_outputs(P.trained, epoch=map(epoch_name, EPOCHS[1:])),
        logs=seed_outputs(P.run_log),
    log:
        "logs/checkpoints/{setting}/{expansion}.log",
    wildcard_constraints:
        setting=alternatives(IMAGE_SETTINGS),
    params:
        expansion=get_expansion,
        train=get_train_hp,
        epochs=config["candidate"]["epochs"],
        save=EPOCHS[1:],
        seeds=get_seeds,
        template=lambda w: P.trained,
        code=code("train_candidate.py"),
    script:
        "../scripts/train_candidate.py"


use rule train_candidate as train_candidate_lm with:
    output:
        expanded=seed_outputs(P.expanded, lm=True),
        checkpoints=seed_outputs(P.trained, lm=True, epoch=map(epoch_name, LM_EPOCHS[1:])),
        logs=seed_outputs(P.run_log, lm=True),
    wildcard_constraints:
        setting=alternatives(LM_SETTINGS),
    priority: FIRST
    params:
        expansion=get_expansion,
        train=get_train_hp,
        epochs=LM.get("candidate", {}).get("epochs"),
        save=LM_EPOCHS[1:],
        seeds=get_seeds,
        template=lambda w: P.trained,
        code=code("train_candidate.py"),
