"""The HTTP layer: the FastAPI app, its routes, request bodies, answers and errors, and the web console; it translates HTTP to engine calls and back."""
