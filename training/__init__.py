"""Training worker: document-masked GPT training on fewtrunc shards."""
