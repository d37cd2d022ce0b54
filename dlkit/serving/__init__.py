"""`dlkit serve`: a trained run as an HTTP model server (the app, its dynamic batching, the server process)."""
