"""What a rendered overlay must do for a stock ATAK/iTAK fleet, a browser and Prometheus.

Usage: deploy_rules.py RENDERED.yaml SECRET.yaml [--kps-release NAME] [--standard-ports] [--self-test]

- one image: every OTS process (init ots-config, opentakserver, cot-parser, eud-handler,
  eud-handler-ssl) runs the one OTS image, each with its own console script from
  /app/venv/bin; no ots_cot_parser/ots_eud_handler image anywhere; no manifest source under
  deploy/ tags an image (tags live in kustomization `images:` only);
- first start: the opentakserver container's startupProbe runs admin_password.py (from the
  ots-scripts ConfigMap) on a file of a Secret volume holding ots-secrets' admin-password,
  which deploy/secrets generates;
- standard ports (--standard-ports, the prod overlays): a LoadBalancer Service (K3s ServiceLB)
  exposes 80 (redirect to https), 443 (the web UI over TLS), 8088, 8089, 8443 and 8446, each on
  the takgate listener meant for it, and no NodePort or LoadBalancer port reaches a plain-HTTP
  listener other than a redirect (no plain /Marti, no plain logins); wherever a NodePort or
  LoadBalancer Service exposes takgate's cot-tls and marti listeners, OTS_SSL_STREAMING_PORT and
  OTS_MARTI_HTTPS_PORT (written into client packages and QR codes) are among those ports, the
  LoadBalancer's when there is one;
- MediaMTX: OTS_MEDIAMTX_ENABLE=false in ots-settings unless a MediaMTX container runs;
- RabbitMQ: a ConfigMap file mounted into /etc/rabbitmq/conf.d/ permits
  transient_nonexcl_queues;
- backups: CronJob postgres-backup runs base/postgres-backup.sh in the database's own image
  (pg_dump of the same major version), with the password from a Secret file (not env), the
  dump folder on a PersistentVolumeClaim, a retention in days, and a NetworkPolicy that lets
  it reach PostgreSQL;
- kube-prometheus-stack: every ServiceMonitor and PrometheusRule carries `release: NAME`
  (its default serviceMonitorSelector/ruleSelector), the dashboard ConfigMap
  `grafana_dashboard: "1"`.

--self-test breaks a copy of the overlay in each of these ways and fails unless every break is
caught. Exit status 0 when all checks pass.
"""

import argparse
import copy
import glob
import os
import re
import sys
import tomllib

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
DEPLOY = os.path.dirname(HERE)
OTS_REPO = "ghcr.io/brian7704/opentakserver"
# container -> what its command must run from the OTS image's venv (a regular expression)
OTS_PROCESSES = {
    "ots-config": None,  # runs ots-init/write_config.py with the image's Python
    "opentakserver": r"/app/venv/bin/opentakserver(\s|$)",
    "cot-parser": r"/app/venv/bin/cot_parser(\s|$)",
    "eud-handler": r"/app/venv/bin/eud_handler --no-ssl(\s|$)",
    # eud_handler --ssl, through the launcher that binds it to a pod-internal port
    "eud-handler-ssl": r"/app/venv/bin/python3 /etc/ots-scripts/eud_handler_ssl.py --bind-port=\d+ --ssl(\s|$)",
}
PERMIT = "deprecated_features.permit.transient_nonexcl_queues = true"


def repo_of(image):
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return name.rsplit(":", 1)[0] if ":" in last else name


def workloads(docs):
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield d, d["spec"]["template"]["spec"]
        elif d["kind"] == "CronJob":
            yield d, d["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def containers(spec):
    return spec.get("initContainers", []) + spec["containers"]


def find(docs, kind, prefix):
    return [d for d in docs if d["kind"] == kind and d["metadata"]["name"].startswith(prefix)]


def one(docs, kind, name, errs):
    """The object of that kind and name, or None (and an error saying it is missing)."""
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    if not found:
        errs.append(f"no {kind} {name}")
    return found[0] if found else None


def check_one_image(docs, errs):
    ots = one(docs, "Deployment", "opentakserver", errs)
    if ots is None:
        return
    spec = ots["spec"]["template"]["spec"]
    found = {c["name"]: c for c in containers(spec) if c["name"] in OTS_PROCESSES}
    images = {c["image"] for c in found.values()}
    if len(images) != 1:
        errs.append(f"OTS processes run {len(images)} images: {sorted(images)}")
    for name, c in found.items():
        if repo_of(c["image"]) != OTS_REPO:
            errs.append(f"container {name}: image {c['image']} is not {OTS_REPO}")
        want = OTS_PROCESSES[name]
        words = " ".join(c.get("command", []) + c.get("args", []))
        if want and not re.search(want, words):
            errs.append(f"container {name}: command {words!r} does not run {want}")
    for name in ("opentakserver", "cot-parser"):
        if name not in found:
            errs.append(f"no OTS container {name}")
    for _, spec in workloads(docs):
        for c in containers(spec):
            if re.search(r"/ots_(cot_parser|eud_handler)", c["image"]):
                errs.append(f"container {c['name']}: separate OTS image {c['image']}")


def check_sources_untagged(errs, root=DEPLOY):
    """Tags only in kustomization `images:`: manifest sources name images without tag/digest."""
    for path in glob.glob(os.path.join(root, "**", "*.yaml"), recursive=True):
        if os.path.basename(path) == "kustomization.yaml" or "/ci/" in path:
            continue
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                m = re.match(r"^\s*(?:-\s+)?image:\s*(\S+)", line)
                if m and (repo_of(m.group(1)) != m.group(1)):
                    errs.append(f"{os.path.relpath(path, root)}:{n}: image {m.group(1)} tagged outside kustomization images:")


def check_admin_password(docs, secret, errs):
    ots = one(docs, "Deployment", "opentakserver", [])
    if ots is None:
        return
    spec = ots["spec"]["template"]["spec"]
    c = next((c for c in spec["containers"] if c["name"] == "opentakserver"), None)
    if c is None:
        errs.append("no opentakserver container")
        return
    cmd = (c.get("startupProbe") or {}).get("exec", {}).get("command", [])
    script = next((w for w in cmd if w.endswith("/admin_password.py")), None)
    if not script or cmd.index(script) + 1 >= len(cmd):
        errs.append(f"opentakserver's startupProbe {cmd} does not run admin_password.py PASSWORD_FILE")
        return
    pw_file = cmd[cmd.index(script) + 1]
    vols = {v["name"]: v for v in spec.get("volumes", [])}

    def source(path):
        for m in c.get("volumeMounts", []):
            if os.path.dirname(path) == m["mountPath"].rstrip("/"):
                return vols.get(m["name"], {}), os.path.basename(path)
        return {}, None

    vol, key = source(script)
    cms = find(docs, "ConfigMap", (vol.get("configMap") or {}).get("name", "\0"))
    if not cms or key not in (cms[0].get("data") or {}):
        errs.append(f"{script} is not a key of a ConfigMap mounted into opentakserver")
    vol, path = source(pw_file)
    sec = vol.get("secret") or {}
    items = {i["path"]: i["key"] for i in sec.get("items", [])}
    if sec.get("secretName") != "ots-secrets" or items.get(path) != "admin-password":
        errs.append(f"{pw_file} is not ots-secrets' admin-password on a Secret volume of opentakserver")
    if "admin-password" not in (secret.get("data") or {}):
        errs.append("deploy/secrets makes no admin-password")


def check_mediamtx(docs, errs):
    runs = any("mediamtx" in c["image"] for _, s in workloads(docs) for c in containers(s))
    settings = find(docs, "ConfigMap", "ots-settings")
    value = (settings[0].get("data") or {}).get("OTS_MEDIAMTX_ENABLE") if settings else None
    if not runs and value != "false":
        errs.append(f"no MediaMTX runs, but ots-settings OTS_MEDIAMTX_ENABLE is {value!r}, not 'false'")


def check_rabbitmq(docs, errs):
    rmq = one(docs, "Deployment", "rabbitmq", errs)
    if rmq is None:
        return
    spec = rmq["spec"]["template"]["spec"]
    vols = {v["name"]: v for v in spec.get("volumes", [])}
    ok = False
    for c in spec["containers"]:
        for m in c.get("volumeMounts", []):
            if not m["mountPath"].startswith("/etc/rabbitmq/conf.d/"):
                continue
            cm = (vols.get(m["name"]) or {}).get("configMap") or {}
            for d in find(docs, "ConfigMap", cm.get("name", "\0")):
                text = (d.get("data") or {}).get(m.get("subPath", ""), "")
                if any(line.strip() == PERMIT for line in text.splitlines()):
                    ok = True
    if not ok:
        errs.append(f"RabbitMQ: no ConfigMap file in /etc/rabbitmq/conf.d/ says {PERMIT!r}")


def check_backup(docs, errs):
    job = one(docs, "CronJob", "postgres-backup", errs)
    if job is None:
        return
    tmpl = job["spec"]["jobTemplate"]["spec"]["template"]
    spec, labels = tmpl["spec"], tmpl["metadata"].get("labels") or {}
    c = spec["containers"][0]
    env = {e["name"]: e for e in c.get("env", [])}
    vols = {v["name"]: v for v in spec.get("volumes", [])}
    mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
    pg = [d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "postgres"]
    if pg and c["image"] != pg[0]["spec"]["template"]["spec"]["containers"][0]["image"]:
        errs.append(f"backup image {c['image']} is not the database's own (pg_dump must match its major)")
    if not any(w.endswith("/postgres-backup.sh") for w in c.get("command", []) + c.get("args", [])):
        errs.append("backup container does not run postgres-backup.sh")
    if any("secretKeyRef" in (e.get("valueFrom") or {}) for e in env.values()) or "PGPASSWORD" in env:
        errs.append("backup: a password in the environment")
    pw = (env.get("PGPASSWORD_FILE") or {}).get("value", "")
    m = mounts.get(os.path.dirname(pw))
    sec = (vols.get(m["name"], {}) if m else {}).get("secret") or {}
    if {i["path"]: i["key"] for i in sec.get("items", [])}.get(os.path.basename(pw)) != "postgres-password":
        errs.append(f"backup: PGPASSWORD_FILE {pw!r} is not ots-secrets' postgres-password on a Secret volume")
    bdir = (env.get("BACKUP_DIR") or {}).get("value", "")
    m = mounts.get(bdir)
    if not m or "persistentVolumeClaim" not in vols.get(m["name"], {}):
        errs.append(f"backup: BACKUP_DIR {bdir!r} is not on a PersistentVolumeClaim")
    keep = (env.get("BACKUP_KEEP_DAYS") or {}).get("value", "")
    if not keep.isdigit() or int(keep) < 1:
        errs.append(f"backup: BACKUP_KEEP_DAYS {keep!r} is not a number of days")
    let_in = False
    for np_ in (d for d in docs if d["kind"] == "NetworkPolicy"):
        if (np_["spec"]["podSelector"].get("matchLabels") or {}).get("app.kubernetes.io/name") != "postgres":
            continue
        for rule in np_["spec"].get("ingress", []):
            for frm in rule.get("from", []):
                sel = (frm.get("podSelector") or {}).get("matchLabels")
                if sel and all(labels.get(k) == v for k, v in sel.items()):
                    let_in = True
    if not let_in:
        errs.append("backup: no NetworkPolicy lets the backup pod reach PostgreSQL")


STANDARD = {80: "redirect", 443: "https", 8088: "cot-tcp", 8089: "cot-tls", 8443: "marti", 8446: "enroll"}


def takgate_http_listeners(docs):
    """containerPort -> (name, profile, TLS?) of takgate's [[http]] listeners."""
    cms = find(docs, "ConfigMap", "takgate-config")
    if not cms:
        return {}
    conf = tomllib.loads(next(iter(cms[0]["data"].values())))
    return {int(h["listen"].rsplit(":", 1)[1]): (h["name"], h.get("profile"), bool(h.get("tls")))
            for h in conf.get("http", [])}


def check_ports(docs, standard, errs):
    ots = one(docs, "Deployment", "opentakserver", [])
    tg = next((c for c in ots["spec"]["template"]["spec"]["containers"] if c["name"] == "takgate"), None) if ots else None
    if tg is None:
        errs.append("no takgate container")
        return
    named = {p["name"]: p["containerPort"] for p in tg.get("ports", [])}
    exposed = {}  # takgate port name -> {"LoadBalancer": [ports], "NodePort": [ports]}
    for svc in (d for d in docs if d["kind"] == "Service"):
        kind = svc["spec"].get("type", "ClusterIP")
        if kind not in ("NodePort", "LoadBalancer"):
            continue
        for p in svc["spec"]["ports"]:
            tp = p.get("targetPort", p["port"])
            name = tp if tp in named else next((n for n, v in named.items() if v == tp), None)
            if name is None:
                errs.append(f"Service {svc['metadata']['name']} port {p['port']}: target {tp} is no takgate port")
                continue
            exposed.setdefault(name, {}).setdefault(kind, []).append(p["port"] if kind == "LoadBalancer" else p.get("nodePort"))
    lb = {port: name for name, kinds in exposed.items() for port in kinds.get("LoadBalancer", [])}
    if standard:
        for port, name in STANDARD.items():
            if lb.get(port) != name:
                errs.append(f"standard port {port}: the LoadBalancer sends it to {lb.get(port)!r}, not takgate's {name!r}")
        # Production: nothing reaches a plain-HTTP listener that serves anything (UI, logins,
        # /Marti): plain HTTP only redirects.
        http = takgate_http_listeners(docs)
        for name, kinds in exposed.items():
            lname, profile, tls = http.get(named[name], (None, None, True))
            if not tls and profile != "redirect":
                errs.append(f"plain HTTP in production: takgate's {lname!r} (profile {profile}) is exposed on {kinds}")
    settings = find(docs, "ConfigMap", "ots-settings")
    data = (settings[0].get("data") or {}) if settings else {}
    for key, listener in (("OTS_SSL_STREAMING_PORT", "cot-tls"), ("OTS_MARTI_HTTPS_PORT", "marti")):
        kinds = exposed.get(listener)
        if not kinds:
            continue
        want = kinds.get("LoadBalancer") or kinds.get("NodePort")
        if not data.get(key, "").isdigit() or int(data[key]) not in want:
            errs.append(f"{key}={data.get(key)!r} is written into client packages, but devices reach "
                        f"takgate's {listener} on {want}")


def check_kps(docs, release, errs):
    monitors = [d for d in docs if d["apiVersion"].startswith("monitoring.coreos.com/")]
    for d in monitors:
        labels = d["metadata"].get("labels") or {}
        if labels.get("release") != release:
            errs.append(f"{d['kind']} {d['metadata']['name']}: label release={labels.get('release')!r}, "
                        f"kube-prometheus-stack selects release={release!r}")
    if monitors:
        dash = find(docs, "ConfigMap", "takgate-grafana-dashboard")
        if not dash or (dash[0]["metadata"].get("labels") or {}).get("grafana_dashboard") != "1":
            errs.append("no dashboard ConfigMap labelled grafana_dashboard: \"1\"")


def run(docs, secret, release, standard=False):
    errs = []
    check_ports(docs, standard, errs)
    check_one_image(docs, errs)
    check_admin_password(docs, secret, errs)
    check_mediamtx(docs, errs)
    check_rabbitmq(docs, errs)
    check_backup(docs, errs)
    check_kps(docs, release, errs)
    return errs


def pod(docs, name):
    return next(d for d in docs if d["metadata"]["name"] == name and d["kind"] == "Deployment")["spec"]["template"]["spec"]


def ots_container(docs, name):
    return next(c for c in containers(pod(docs, "opentakserver")) if c["name"] == name)


def break_separate_image(docs, _):
    ots_container(docs, "cot-parser")["image"] = "ghcr.io/brian7704/ots_cot_parser:1.7.14"


def break_other_tag(docs, _):
    ots_container(docs, "eud-handler")["image"] = OTS_REPO + ":1.7.13"


def break_command(docs, _):
    ots_container(docs, "eud-handler")["command"] = ["/app/venv/bin/eud_handler", "--ssl"]


def break_admin_probe(docs, _):
    ots_container(docs, "opentakserver")["startupProbe"] = {"exec": {"command": ["curl", "-f", "http://127.0.0.1:8081/api/health"]}}


def break_admin_key(docs, _):
    for v in pod(docs, "opentakserver")["volumes"]:
        for i in (v.get("secret") or {}).get("items", []):
            if i["key"] == "admin-password":
                i["key"] = "secret-key"


def break_secret(_, secret):
    secret["data"].pop("admin-password")


def break_mediamtx(docs, _):
    find(docs, "ConfigMap", "ots-settings")[0]["data"]["OTS_MEDIAMTX_ENABLE"] = "true"


def break_rabbitmq(docs, _):
    for c in pod(docs, "rabbitmq")["containers"]:
        c["volumeMounts"] = [m for m in c["volumeMounts"] if "conf.d" not in m["mountPath"]]


def break_release(docs, _):
    for d in docs:
        if d["kind"] == "ServiceMonitor":
            d["metadata"]["labels"].pop("release")


def backup_container(docs):
    job = next(d for d in docs if d["kind"] == "CronJob")
    return job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]


def break_backup_env_password(docs, _):
    backup_container(docs)["env"].append(
        {"name": "PGPASSWORD", "valueFrom": {"secretKeyRef": {"name": "ots-secrets", "key": "postgres-password"}}})


def break_backup_emptydir(docs, _):
    job = next(d for d in docs if d["kind"] == "CronJob")
    for v in job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["volumes"]:
        if "persistentVolumeClaim" in v:
            v.pop("persistentVolumeClaim")
            v["emptyDir"] = {}


def break_backup_netpol(docs, _):
    for d in docs:
        if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "postgres":
            d["spec"]["ingress"][0]["from"] = d["spec"]["ingress"][0]["from"][:1]


def break_lb_port(docs, _):
    for d in docs:
        if d["kind"] == "Service" and d["spec"].get("type") == "LoadBalancer":
            d["spec"]["ports"] = [p for p in d["spec"]["ports"] if p["port"] != 8446]


def break_plain_web(docs, _):
    for d in docs:
        if d["kind"] == "Service" and d["metadata"]["name"] == "opentakserver":
            for p in d["spec"]["ports"]:
                if p.get("nodePort") == 31080:
                    p["targetPort"] = "http"


def break_advertised(docs, _):
    find(docs, "ConfigMap", "ots-settings")[0]["data"]["OTS_MARTI_HTTPS_PORT"] = "31443"


BREAKS = [break_lb_port, break_plain_web, break_advertised, break_backup_env_password, break_backup_emptydir, break_backup_netpol,
          break_separate_image, break_other_tag, break_command, break_admin_probe,
          break_admin_key, break_secret, break_mediamtx, break_rabbitmq, break_release]


def self_test(docs, secret, release, standard):
    failed = 0
    has_monitors = any(d["kind"] == "ServiceMonitor" for d in docs)
    for brk in BREAKS:
        if (brk is break_release and not has_monitors) or (brk in (break_lb_port, break_plain_web, break_advertised) and not standard):
            continue
        d2, s2 = copy.deepcopy(docs), copy.deepcopy(secret)
        brk(d2, s2)
        errs = run(d2, s2, release, standard)
        print(f"{'ok  ' if errs else 'MISS'} {brk.__name__}: {errs[:1] or 'not caught'}")
        failed += not errs
    tmp = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"deploy-rules-{os.getpid()}")
    os.makedirs(tmp, exist_ok=True)
    with open(os.path.join(tmp, "bad.yaml"), "w", encoding="utf-8") as f:
        f.write("spec:\n  containers:\n    - image: rabbitmq:4.1\n")
    errs = []
    check_sources_untagged(errs, tmp)
    os.remove(os.path.join(tmp, "bad.yaml"))
    os.rmdir(tmp)
    print(f"{'ok  ' if errs else 'MISS'} tagged image in a manifest source: {errs[:1] or 'not caught'}")
    failed += not errs
    return failed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("rendered")
    ap.add_argument("secret")
    ap.add_argument("--kps-release", default="kube-prometheus-stack")
    ap.add_argument("--standard-ports", action="store_true")
    ap.add_argument("--self-test", action="store_true")
    a = ap.parse_args()
    with open(a.rendered, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    with open(a.secret, encoding="utf-8") as f:
        secret = yaml.safe_load(f)
    errs = run(docs, secret, a.kps_release, a.standard_ports)
    check_sources_untagged(errs)
    for e in errs:
        print(f"ERROR {os.path.basename(a.rendered)}: {e}")
    missed = self_test(docs, secret, a.kps_release, a.standard_ports) if a.self_test else 0
    print(f"deploy_rules: {os.path.basename(a.rendered)}: {len(errs)} errors"
          + (f", {missed} breaks not caught" if a.self_test else ""))
    return 1 if errs or missed else 0


if __name__ == "__main__":
    sys.exit(main())
