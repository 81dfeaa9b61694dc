"""Where an attempt is finally sent: the OpenRouter (OpenAI-compatible) endpoint over httpx, and LiteLLM towards
another provider. Each is the innermost handler of its route: it converts its library's failures into ours, once."""
