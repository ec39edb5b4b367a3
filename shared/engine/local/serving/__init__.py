"""Serving for the local engine: a router process per endpoint (router.py) in front of one deployment server
process per deployment (deployment_server.py); endpoints.py (one level up) starts, configures and stops them."""
