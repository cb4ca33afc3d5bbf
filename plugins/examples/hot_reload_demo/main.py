"""The hot_reload_demo plugin: answers with the version of the code that ran it."""

import os
import time

VERSION = 1


def run(seconds=0, context=None):
    started = time.time()
    if seconds:
        time.sleep(float(seconds))
    return {
        "version": VERSION,
        "pid": os.getpid(),
        "started": started,
        "invocation_id": context["invocation_id"] if context else None,
    }
