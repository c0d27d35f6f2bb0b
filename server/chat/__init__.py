"""Chat completions pipeline."""
