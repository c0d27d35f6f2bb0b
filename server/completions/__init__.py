"""Text completions (``/v1/completions``) and the tokenizer endpoints, over the chat pipeline."""
