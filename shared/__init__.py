"""ft-autopilot: the application. Nothing here imports azure.functions (the dev host aside)."""
