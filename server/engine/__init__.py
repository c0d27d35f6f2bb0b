"""The engine seam: a small interface in front of vLLM's AsyncLLM (and a fake for tests)."""
