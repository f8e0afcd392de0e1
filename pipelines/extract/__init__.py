"""The extraction stage on Ray Data: `config` (ExtractSettings, ExtractConfig, the model a --model names),
`plan` (how the work spreads over the cluster), `pipeline` (run(ExtractConfig): rows -> decode -> model
actors -> store parts -> commit), `decode` (torch-free decode and write tasks), `embedder` (the model
actor), `resume` (what a store already holds; adopting an interrupted run's parts), `cli`."""
