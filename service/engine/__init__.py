"""The engine: collections and their served versions, writes, rebuilds, jobs, training, replicas, keys and the encode batcher; it knows nothing of HTTP."""
