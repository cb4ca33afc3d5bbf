"""The data_processor example: a realistic plugin with a third-party dependency and lifecycle hooks."""

import importlib.util
import logging
import sys
import time

import humanize

log = logging.getLogger("data_processor")
OPERATIONS = ("validate", "report", "archive")
# A rule that gives no params binds `operation` to the row change's (seed 000's monitored_tables).
ROW_CHANGES = ("INSERT", "UPDATE", "DELETE", "READ")
# Packages the runner has but a plugin must not see: proof that the plugin runs in its own venv.
RUNNER_ONLY_PACKAGES = ("pydantic", "confluent_kafka", "redis", "click", "cdcflow", "schemas")


def before_execution(params, context):
    context["hook_started"] = time.time()


def process_data(operation, teacher_id=None, is_valid=True, lessons=0, context=None):
    if operation not in OPERATIONS + ROW_CHANGES:
        raise ValueError(f"unknown operation {operation!r} (known: {', '.join(OPERATIONS + ROW_CHANGES)})")
    if operation in ("validate", *ROW_CHANGES) and not is_valid:
        status = "needs review"
    else:
        status = "ok"
    return {
        "operation": operation,
        "teacher_id": teacher_id,
        "status": status,
        "lessons_in_words": humanize.apnumber(lessons) if lessons < 10 else humanize.intword(lessons),
        "lessons_pretty": humanize.intcomma(lessons),
        "humanize_version": humanize.__version__,
        "python_prefix": sys.prefix,
        "runner_packages_visible": [p for p in RUNNER_ONLY_PACKAGES if importlib.util.find_spec(p) is not None],
        "invocation_id": context.invocation_id if context else None,
    }


def after_execution(result, context):
    log.debug("processed %s in %.1f ms", context.get("invocation_id"), (time.time() - context["hook_started"]) * 1000)


def on_failure(error, context):
    # A plugin's own stderr goes to the runner's log, tagged with the plugin name and worker pid.
    print(f"data_processor failed for {context.get('invocation_id')}: {error}", file=sys.stderr)
