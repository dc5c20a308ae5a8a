#!/usr/bin/env python3
"""The judgements of scripts/e2e.sh: what the daemon's API and the lab's clients answered,
read and summed up. One function per question; the shell calls them by name:

  verdicts.py NAME [ARG ...] <JSON      # prints the function's answer

Most read one JSON document on stdin (an API answer, or client.py's tally
{"answers": {"be1": N, ...}, "errors": N, "seconds": S}); `decap-sum` reads the lab's files.
A value prints as Python prints it (True, 3, {'be1': 20}), which is what the shell compares.
"""
import glob
import json
import os
import sys

# The lab's weights of 192.0.2.10:80/tcp (scripts/lab/fulcrum.toml.in): be1:be2:be3 = 1:2:3.
SPREAD_WANT = {"be1": 1 / 6, "be2": 2 / 6, "be3": 3 / 6}


def ready(d, vip):
    """The daemon is ready: every backend of every VIP has a next-hop MAC, and every
    backend of `vip` is up (GET /v1/vips)."""
    return all(b.get("mac") for v in d["vips"] for b in v["backends"]) and all(
        b["health"] == "up" for v in d["vips"] if v["vip"] == vip for b in v["backends"])


def vip_state(d):
    """A VIP's backends as "ADDR:w=WEIGHT:STATE:HEALTH ..." (GET /v1/vips/VIP)."""
    return " ".join("%s:w=%s:%s:%s" % (b["address"], b["weight"], b["state"], b["health"])
                    for b in d["vip"]["backends"])


def first_active(d):
    """The address of a VIP's first backend that takes new flows (GET /v1/vips/VIP)."""
    return [b["address"] for b in d["vip"]["backends"]
            if b["weight"] > 0 and b["state"] == "active"][0]


def spread(d, total_wanted=600, tolerance=0.05):
    """"ok ..." when `total_wanted` connections all succeeded and each backend's share is
    within `tolerance` of its weight's, else "bad ..."; then the shares."""
    total = sum(d["answers"].values())
    parts = []
    ok = d["errors"] == 0 and total == total_wanted and set(d["answers"]) <= set(SPREAD_WANT)
    for b, w in SPREAD_WANT.items():
        share = d["answers"].get(b, 0) / max(total, 1)
        ok = ok and abs(share - w) <= tolerance
        parts.append(f"{b} {100 * share:.1f}% (weight {100 * w:.1f}%)")
    return (("ok" if ok else "bad") + " " + ", ".join(parts)
            + f"; errors {d['errors']}, {d['seconds']} s")


def decap_sum(key, lab_dir):
    """The backends' decapsulators' counter `key`, summed (LAB_DIR/be*.decap.json)."""
    return sum(json.load(open(f)).get(key, 0)
               for f in glob.glob(os.path.join(lab_dir, "be*.decap.json")))


def errors(d):
    """Requests of a tally that got no answer."""
    return d["errors"]


def answers(d):
    """A tally's answers by backend."""
    return d["answers"]


def answers_from(d, backend):
    """How many of a tally's answers came from `backend` (be1, ...)."""
    return d["answers"].get(backend, 0)


def backends_answering(d):
    """How many backends answered a tally's requests."""
    return len(d["answers"])


def field(d, key):
    """One top-level field of a JSON object (None when absent)."""
    return d.get(key)


# Name on the command line -> (function, whether it reads JSON from stdin).
COMMANDS = {
    "ready": (ready, True),
    "vip-state": (vip_state, True),
    "first-active": (first_active, True),
    "spread": (spread, True),
    "decap-sum": (decap_sum, False),
    "errors": (errors, True),
    "answers": (answers, True),
    "answers-from": (answers_from, True),
    "backends-answering": (backends_answering, True),
    "field": (field, True),
}


def main(argv):
    if not argv or argv[0] not in COMMANDS:
        sys.exit("usage: verdicts.py {%s} [ARG ...] <JSON" % "|".join(COMMANDS))
    function, reads_json = COMMANDS[argv[0]]
    args = argv[1:]
    print(function(json.load(sys.stdin), *args) if reads_json else function(*args))


if __name__ == "__main__":
    main(sys.argv[1:])
