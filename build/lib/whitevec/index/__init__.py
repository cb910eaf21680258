"""FAISS indexes, the document store and versioned serving bundles."""
