"""The `autopilot` command: main.py parses and dispatches; run_file.py runs one dataset file through the use cases
(or dry-runs it for Azure ML); demo.py tells the whole story on this machine."""
