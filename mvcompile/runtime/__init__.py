"""Streaming runtime: load compiled artifacts and run them frame by frame."""
