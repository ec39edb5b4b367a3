"""Adapters to the world outside the use cases: blob storage, the run ledger on it, notifications, Azurite, and
the split spool. The engines (shared/engine/) and the dev host (shared/devhost/) are adapters too."""
