"""teacher_report's tool: an ordinary command-line program, run by cdcflow as a command plugin.

It knows nothing of cdcflow: arguments in, JSON on stdout, a message on stderr and a non-zero exit
status when it cannot do its job.
"""

import argparse
import json
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description="Report on one teacher's lessons.")
    parser.add_argument("--teacher-id", required=True)
    parser.add_argument("--lessons", type=int, default=0)
    args = parser.parse_args()
    if args.lessons < 0:
        print(f"lessons must be 0 or more, got {args.lessons}", file=sys.stderr)
        return 2
    level = "busy" if args.lessons >= 20 else "regular" if args.lessons else "idle"
    print(json.dumps({"teacher_id": args.teacher_id, "lessons": args.lessons, "level": level}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
