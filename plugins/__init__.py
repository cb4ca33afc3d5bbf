"""cdcflow plugin runners: isolated, warm, reflective execution of plugins for Kafka invocations.

Modules, one job each:
  registry     discover plugin folders, load plugin.json, hash the code
  venvs        one cached, atomic, isolated virtualenv per dependency set
  worker_main  the stdlib-only worker process (and the pipe's framing)
  pool         warm worker processes per plugin; call() with timeout/crash handling
  execution    Invocation -> validated request -> pool -> Result
  lane         a plugin's queue and its calling threads
  offsets      in-order commit positions over out-of-order completions
  store        Redis run history, index and done markers
  sink         results to Redis then Kafka; delivery reports release commits
  runner       the consumer loop tying it together: run_runner()
  cli          `cdcflow runners|plugins|runs|dlq`
  testing      helpers for tests and benchmarks
"""
