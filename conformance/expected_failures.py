"""Compares a conformance report with a peer's documented deviations.

    python3 conformance/expected_failures.py NAME REPORT.json EXPECTED.txt

EXPECTED.txt lists `<check> <family>+<transport>` per line (`#` starts a
comment). Exits 1 when the report's failures differ from it either way: a
new failure, or a documented deviation no longer seen.
"""

import json
import sys

name, report_path, expected_path = sys.argv[1:4]
report = json.load(open(report_path))
got = {(r["check"], r["target"].split("://")[0]) for r in report["results"] if r["outcome"] == "fail"}
want = set()
for line in open(expected_path):
    fields = line.split("#")[0].split()
    if fields:
        want.add((fields[0], fields[1]))
new, gone = sorted(got - want), sorted(want - got)
for check, target in new:
    print(f"NEW FAILURE, not a documented deviation: {check} on {target}")
for check, target in gone:
    print(f"documented deviation no longer seen (update {expected_path} and docs): {check} on {target}")
if new or gone:
    sys.exit(1)
print(f"{name}: {len(got)} failures, each a documented deviation")
