"""The use cases: what handlers, the CLI and the demo call, one call each."""
