"""Write the spec of every PrometheusRule in the rendered manifests as a Prometheus rule file.

Usage: extract_rules.py OUTDIR RENDERED.yaml...   (writes OUTDIR/<name>.rules.yaml)
promtool reads rule files, not PrometheusRule objects.
"""

import os
import sys

import yaml


def main():
    outdir, files = sys.argv[1], sys.argv[2:]
    os.makedirs(outdir, exist_ok=True)
    written = {}
    for path in files:
        with open(path, encoding="utf-8") as f:
            for d in yaml.safe_load_all(f):
                if d and d.get("kind") == "PrometheusRule":
                    out = os.path.join(outdir, f"{d['metadata']['name']}.rules.yaml")
                    with open(out, "w", encoding="utf-8") as o:
                        yaml.safe_dump(d["spec"], o, sort_keys=False)
                    written[out] = True
    if not written:
        sys.exit("extract_rules: no PrometheusRule found")
    print(f"extract_rules: {', '.join(sorted(written))}")


if __name__ == "__main__":
    main()
