"""Engine-agnostic steps of the fewtrunc pipeline, the engines that run them, and the CLI."""
