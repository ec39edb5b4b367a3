"""The domain: runs and their state machine, job statuses, tags, names, and the rules the lifecycle follows,
as values and pure functions. It imports nothing else from the app."""
