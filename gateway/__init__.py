"""The data plane: authenticates API keys, applies rate limits and quotas, proxies (and streams)
calls to providers and hands usage records off the hot path. A process of its own (`python -m gateway`)."""
