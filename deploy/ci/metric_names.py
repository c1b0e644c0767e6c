"""Every takgate_* metric that the SLO rules and the dashboard use must be one takgate exports.

Usage: metric_names.py --exposition METRICS.txt... --uses FILE...

The expositions are the /metrics bodies the drift test scraped from the real binary (one per
overlay, after traffic that makes each labelled family appear). Recording-rule outputs
(takgate:...) are not metric names of the binary and are not matched.
"""

import argparse
import os
import re
import sys


def families(path):
    out = set()
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = re.match(r"# TYPE (\S+) (\S+)", line)
            if m:
                out.add(m.group(1))
                if m.group(2) == "histogram":
                    out.update(m.group(1) + s for s in ("_bucket", "_sum", "_count"))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--exposition", nargs="+", required=True)
    ap.add_argument("--uses", nargs="+", required=True)
    a = ap.parse_args()
    exported = set().union(*(families(p) for p in a.exposition))
    if not exported:
        sys.exit("metric_names: the expositions hold no metric families")
    failed = 0
    for path in a.uses:
        with open(path, encoding="utf-8") as f:
            used = set(re.findall(r"\btakgate_[a-z0-9_]+", f.read()))
        missing = sorted(used - exported)
        if not used:
            print(f"FAIL {path}: uses no takgate_* metric at all")
            failed += 1
        elif missing:
            print(f"FAIL {path}: not exported by takgate: {', '.join(missing)}")
            failed += 1
        else:
            print(f"ok   {os.path.basename(path)}: {len(used)} takgate_* names, all exported")
    print(f"metric_names: {len(exported)} exported names; {failed} file(s) with unknown names")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
