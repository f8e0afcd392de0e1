"""The training recipes, Ray-free, written once and called by every stage, benchmark and test:

    config       TrainConfig / LossConfig: every number of a run
    fitting      initial_model (NetVLAD centroids by k-means), fit_whitening (PCA from database images)
    optim        make_optimizer / make_scheduler (SGD, step decay)
    checkpoint   TrainingState, save_checkpoint / load_state / model_from_checkpoint
    collective   LocalCollective (one process) / DistributedCollective (torch.distributed all-gather)
    tuples       TupleImages: a batch of (query, positive, negatives) images
    epoch        train_epoch: plan the chunk -> embed the cache -> mine -> steps
    validation   validate: Recall@N in memory or through a descriptor store
    loop         run_epochs: validation, epochs, reports

`pipelines.train` runs them on Ray Train; `benchmarks/train_diagnostic.py` runs them in one process.
"""
