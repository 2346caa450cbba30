"""A local fake of the WeChat / WeCom platform for tests, the benchmark and `python -m bot run --sandbox`:
the API endpoints the connectors use, with the platform's windows, quotas, rate limits and error
codes, and signed, encrypted callbacks delivered to the bot (retried like the platform does)."""
