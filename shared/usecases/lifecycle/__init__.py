"""After submission: jobs, promotion, rollout, and the idle teardown."""
