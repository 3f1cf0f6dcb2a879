"""Teacher clients (OpenAI-compatible HTTP, local transformers), their prompts and the response journal."""
