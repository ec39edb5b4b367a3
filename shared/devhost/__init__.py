"""A local Functions host for function_app, for machines without Core Tools (`autopilot serve`, the demo, tests).

It indexes the app as the Functions host does (`app.get_functions()` once, bindings from `get_function_json()`,
`%NAME%` resolved from the app settings) and delivers every trigger the app declares:

- HTTP: `/api/<route>` (the prefix comes from host.json), route templates, methods and function keys as Azure
  enforces them (header `x-functions-key` or query `code`; ANONYMOUS routes need none).
- Event Grid: `POST /runtime/webhooks/eventgrid?functionName=<fn>`, the webhook Event Grid and the local engine
  call: validation handshake, one invocation per event, 500 when a handler raised so the sender retries.
- Blob: Azurite emits no Event Grid events, so a poller lists the trigger's container and delivers each
  (name, ETag) once, with receipts on disk and a poison threshold, like the polling blob trigger. The
  Event Grid blob webhook `/runtime/webhooks/blobs?functionName=Host.Functions.<fn>` works too.
- Timer: NCRONTAB schedules (shared.devhost.ncrontab) in UTC on a thread per function; runOnStartup honoured.
- `POST /admin/functions/<fn>` `{"input": ...}` runs a non-HTTP function by hand (Core Tools' admin API).

Everything binds 127.0.0.1, served by werkzeug. The function key is printed once at start and never logged.

Modules, each importing only those listed before it: indexing, replies, keys, invocation, routes, blobs,
blob_poller, timers, eventgrid, admin, server, host.
"""

from shared.devhost.host import DevHost, serve
from shared.devhost.indexing import DevHostError, index_app

__all__ = ["DevHost", "DevHostError", "index_app", "serve"]
