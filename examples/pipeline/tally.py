#!/usr/bin/env python3
"""The Tally agent of examples/pipeline, in Python.

It speaks the JSON line protocol of Ovid's external agents, the Maelstrom envelope: one JSON
object per line, {"src", "dest", "body": {"type", "msg_id", "in_reply_to", ...}}. The box
first sends {"type": "init", "node_id", "node_ids"} and waits for "init_ok".
"""

import json
import sys


def send(src, dest, body):
    sys.stdout.write(json.dumps({"src": src, "dest": dest, "body": body}) + "\n")
    sys.stdout.flush()


def main():
    me = None
    count = 0
    next_id = 0
    for line in sys.stdin:
        msg = json.loads(line)
        body = msg["body"]
        next_id += 1
        if body["type"] == "init":
            me = body["node_id"]
            send(me, msg["src"], {"type": "init_ok", "msg_id": next_id, "in_reply_to": body.get("msg_id")})
        elif body["type"] == "Record":
            count += 1
            send(me, msg["src"], {"type": "Recorded", "msg_id": next_id, "in_reply_to": body.get("msg_id"), "count": count})


if __name__ == "__main__":
    main()
