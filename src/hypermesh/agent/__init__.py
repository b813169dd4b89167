"""The node agent: Prometheus /metrics, a JSON API and a live dashboard over one shared Sampler.

Run it with ``hypermesh agent``; see docs/agent.md. Importing this package imports the web stack.
"""
