"""The training stage on Ray Train: `driver` (run(TrainConfig): initial model, TorchTrainer, best epoch,
whitening, outputs), `worker` (what each DDP worker runs), `cli`. The training recipes themselves live in
`sare_core.training` (config, fitting, epoch, validation, checkpoint, loop)."""
