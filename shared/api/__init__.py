"""Typed models at the app's edges: HTTP requests and views (http.py), and Azure ML run events (events.py)."""
