"""The console script and the Hydra edge: `ganctl <command>` composes a config from conf/ and hands
plain values to the commands; a sweep's summary table is written here too."""
