"""`ganctl sample`, `ganctl eval` (and `fit-classifier`), `ganctl summary` and `ganctl export`, below
Hydra: each takes plain values. `ganctl train` is ganctl.training.loop."""
