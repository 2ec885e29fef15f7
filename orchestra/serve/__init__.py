"""``orchestra serve``: an OpenAI-compatible router server with API keys and per-key budgets."""
