"""FAISS indexes, the document store, versions of a collection on disk and the bundle a loaded version serves."""
