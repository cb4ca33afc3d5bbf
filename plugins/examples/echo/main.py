"""The echo plugin: returns what it was given, plus when it was called (for latency measurement)."""

import os
import sys
import time


def echo(message=None, data=None, mode="echo", seconds=0, context=None):
    called_at = time.time()
    if mode == "raise":
        raise ValueError(f"echo was asked to fail (message={message!r})")
    if mode == "exit":
        sys.exit(3)
    if mode == "hang":
        while True:
            time.sleep(3600)
    if mode == "sleep":
        time.sleep(float(seconds))
    if mode == "print":
        # Goes to the runner's log, never into the result protocol.
        print(f"echo printing: {message}")
    return {
        "message": message,
        "data": data,
        "mode": mode,
        "invocation_id": context["invocation_id"] if context else None,
        "attempt": context["attempt"] if context else None,
        "called_at": called_at,
        "pid": os.getpid(),
    }
