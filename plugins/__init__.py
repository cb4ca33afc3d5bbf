"""cdcflow plugin runners: isolated, warm, reflective execution of plugins for Kafka invocations.

Modules, one job each:
  registry     discover plugin folders, load plugin.json, hash the code
  venvs        one cached, atomic, isolated virtualenv per dependency set
  worker_main  the stdlib-only worker process (and the pipe's framing)
  pool         warm worker processes per plugin; call() with timeout/crash handling
  execution    Invocation -> validated request -> pool -> Result
  lane         a plugin's priority queue, retry timer, calling threads and loaded versions
  retries      retry/backoff and dead-letter decisions
  followups    publish a retry or dead letter and wait for Kafka's ack
  dlq          read dead letters back, replay them once
  state        served version/state/last error and reload requests in Redis
  watcher      polling, debounced detection of changed plugin folders
  reloader     hot reload: new pool on new code, old one drains, broken versions recorded
  offsets      in-order commit positions over out-of-order completions
  store        Redis run history, index and done markers
  delayed_store  delayed triggers waiting for their time (released by streams/delayed_release.py)
  sink         results to Redis then Kafka; delivery reports release commits
  runner       the consumer loop tying it together: run_runner()
  cli          `cdcflow runners|plugins|runs|dlq`
"""
