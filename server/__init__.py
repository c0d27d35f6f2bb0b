"""OpenAI-compatible chat completions server for Mistral models."""
