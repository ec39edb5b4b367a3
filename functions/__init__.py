"""Azure Functions blueprints: one per trigger family. Handlers parse, call one service, map errors."""
