"""Tracing, the rate-limiting sampler, Prometheus metrics and structlog, side by side."""
