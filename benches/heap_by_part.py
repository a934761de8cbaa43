#!/usr/bin/env python3
"""Peak heap of a fleet run, per stream, by the part of the producer that allocated it.

Input: heaptrack's peak-cost flamegraph stacks of a `fleet` bench run (docs/performance.md,
"Where the memory goes, profiled"):

    heaptrack -o /tmp/ht target/release/deps/fleet-<hash> --streams 300 --duration 70s --ramp 20s
    heaptrack_print -f /tmp/ht.zst --flamegraph-cost-type peak -F /tmp/stacks.txt
    python3 benches/heap_by_part.py /tmp/stacks.txt 300

Each stack is attributed to the first frame, from the allocation outwards, that names a part
below (by function and source file, as heaptrack prints them); allocations of the bench's
setup (the clip it loads once) are reported apart, not per stream.
"""

import re
import sys

# (part, test on "function (file.rs)"), first match from the leaf wins.
PARTS = [
    ("tasks (spawned futures)", lambda f: f.startswith("bind_new_task")),
    ("media: read chunks held for resend", lambda f: f == "read (fleet.rs)"),
    ("bench setup (once, not per stream)", lambda f: f.endswith("(fleet.rs)") and not f.startswith("{async")),
    ("hyper connection", lambda f: re.search(r"\((dispatch|http1|conn|io|exec|client)\.rs\)$", f)),
    ("open fragment (frame list, cluster)", lambda f: re.search(r"\((cut|demux|refragment|input|output)\.rs\)$", f)),
    ("ledger", lambda f: f.endswith("(ledger.rs)")),
    ("latency histograms", lambda f: f.endswith("(summary.rs)")),
    ("body channel", lambda f: f.endswith("(body.rs)")),
    ("session state and events", lambda f: re.search(r"\((session|events|sink|ack_reader|driver|api)\.rs\)$", f)),
]
OTHER = "other (runtime, SDK, TLS roots)"


def frame(raw):
    # heaptrack prints "name (file.rs)"; strip generic arguments so "read<> (x.rs)" reads "read".
    return re.sub(r"<[^()]*>", "", raw.strip())


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: heap_by_part.py STACKS_FILE STREAMS")
    path, streams = sys.argv[1], int(sys.argv[2])
    if streams <= 0:
        sys.exit("STREAMS must be above zero")
    totals = {}
    for line in open(path, errors="replace"):
        line = line.rstrip("\n")
        if not line:
            continue
        stack, _, cost = line.rpartition(" ")
        frames = [frame(f) for f in stack.split(";")]
        part = OTHER
        for f in reversed(frames):
            hit = next((name for name, test in PARTS if test(f)), None)
            if hit:
                part = hit
                break
        totals[part] = totals.get(part, 0) + int(cost)
    total = sum(totals.values())
    if total == 0:
        sys.exit(f"{path}: no allocations read; is it heaptrack_print -F output?")
    print(f"peak heap {total / 2**20:.1f} MiB for {streams} streams")
    print("| part | KiB per stream |")
    print("|---|---|")
    for name in [p for p, _ in PARTS] + [OTHER]:
        if name not in totals:
            continue
        if name.startswith("bench setup"):
            print(f"| {name} | ({totals[name] / 2**20:.1f} MiB in all) |")
        else:
            print(f"| {name} | {totals[name] / streams / 1024:.1f} |")


if __name__ == "__main__":
    main()
