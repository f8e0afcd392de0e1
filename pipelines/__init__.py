"""The Ray stages of the system and the `sare` command line, one subpackage per stage:

    data/      datasets to manifests, inspection, the synthetic city (no Ray)
    extract/   Ray Data extraction into Parquet descriptor stores
    train/     Ray Train DDP training (the recipes themselves live in sare_core.training)
    tune/      Ray Tune sweeps, one TorchTrainer per trial
    evaluate/  scoring descriptor stores (sharded FAISS, optionally on Ray actors); eval --manifest
    explain/   per-location evidence maps of NetVLAD descriptors
    model/     model inspection
    demo/      the end-to-end job on the synthetic city

Each stage's entry is a typed config and a `run(config)` function; its `cli` module only parses arguments
into that config. `ray_session` starts or joins Ray with the options every stage uses.
"""
