"""Azure Functions entry point: wiring only. The handlers live in functions/, the application in shared/."""

import logging

import azure.functions as func

from functions.datasets import bp as datasets
from functions.http_api import bp as http_api
from functions.http_lines import bp as http_lines
from functions.http_ui import bp as http_ui
from functions.job_events import bp as job_events
from functions.timers import bp as timers

for noisy in ("azure", "azure.core.pipeline.policies.http_logging_policy", "urllib3"):
    logging.getLogger(noisy).setLevel(logging.WARNING)

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(datasets)
app.register_functions(http_api)
app.register_functions(http_lines)
app.register_functions(http_ui)
app.register_functions(job_events)
app.register_functions(timers)
