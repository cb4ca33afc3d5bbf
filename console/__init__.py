"""How people reach cdcflow: the `cdcflow` command's root, the supervisor (`cdcflow run`), status,
health, config and schema export — and the HTTP API and dashboard. It may import every part; no
part imports it."""
