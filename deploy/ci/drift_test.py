"""Manifests vs. binary: run takgate on the config an overlay renders, the way the pod would.

Usage: drift_test.py RENDERED.yaml TAKGATE_BIN WORKDIR [--metrics-out FILE]

From the rendered manifests it takes the takgate ConfigMap and the takgate container of the
opentakserver Deployment, and checks that they agree with each other and with the binary:

- the container's --config path is the mounted ConfigMap key; ui_root and every TLS file path
  lie under a volume mounted into the container; OTS_DATA_FOLDER is the data volume's mount;
- the listeners' ports are exactly the container's declared ports (admin included);
- shutdown.grace is shorter than terminationGracePeriodSeconds;
- reoriginate listeners: the upstream port is the containerPort of the pod's `eud_handler --ssl`
  container and the --bind-port it is started with (ots-init/eud_handler_ssl.py), no Service
  routes to it; OTS_SSL_STREAMING_PORT of ConfigMap ots-settings (what OTS writes into client
  packages and QR codes) is a port a NodePort or LoadBalancer Service exposes the listener on; the signer key, signer
  certificate and CA are under a read-only volumeMount of the takgate container (OTS's data
  folder), the key's password comes from a Secret (a file on a Secret volume mounted into the
  takgate container alone, or an env secretKeyRef), never a literal; the container whose CA key
  it is (eud_handler --ssl) mounts the same volume;
- plain and terminate listeners (OTS's plain CoT port upstream): the upstream port is the
  containerPort of the pod's TCP `eud_handler` container (which probes it) and
  OTS_TCP_STREAMING_PORT of ConfigMap ots-settings, no Service routes to it and no
  NetworkPolicy lets traffic in to it; a plain listener keeps takgate's [stream.limits]
  defaults; every NodePort targets a takgate listener, 31088 (stock ATAK's plain CoT) one in
  mode plain;
- `takgate check --config` accepts the config;
- takgate started on it (listen addresses rewritten to 127.0.0.1:0, upstreams to loopback fakes
  of OTS, /app/ots to a temporary OTS data folder with a test CA) answers each probe path of
  the container with 200, and every declared containerPort speaks its protocol: HTTP, HTTPS
  with a client certificate where required, CoT over mutual TLS relayed to the fake eud_handler,
  re-originated CoT arriving at a fake `eud_handler --ssl` (mutual TLS, OTS's server name) under
  a certificate with the client's CN signed by the CA key (encrypted, as OTS writes it, with the
  password from the Secret file), passthrough bytes, and plain CoT: an event sent in two pieces
  reaches the fake eud_handler whole, a malformed one never does (and is counted), the next
  one does;
- /metrics answers, after traffic that makes every metric family the rules and the dashboard
  use appear; --metrics-out saves it for promtool and metric_names.py.

Only loopback is used; every wait is bounded. Exit status 0 when all checks pass.
"""

import argparse
import base64
import hashlib
import http.server
import json
import os
import re
import signal
import socket
import socketserver
import ssl
import subprocess
import sys
import threading
import time
import tomllib
import urllib.request

import yaml

FAILURES = []


def fail(msg):
    FAILURES.append(msg)
    print(f"  FAIL {msg}")


def ok(msg):
    print(f"  ok   {msg}")


# ---------------------------------------------------------------- manifests


def load(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def takgate_parts(docs):
    deps = [
        d
        for d in docs
        if d["kind"] == "Deployment"
        and any(c["name"] == "takgate" for c in d["spec"]["template"]["spec"]["containers"])
    ]
    if len(deps) != 1:
        sys.exit(f"drift: expected one Deployment with a takgate container, found {len(deps)}")
    dep = deps[0]
    pod = dep["spec"]["template"]["spec"]
    container = next(c for c in pod["containers"] if c["name"] == "takgate")
    return dep, pod, container


def config_source(docs, pod, container):
    """The TOML text the container reads, following --config to its ConfigMap volume."""
    args = container.get("args", []) + container.get("command", [])
    if "--config" not in args:
        sys.exit("drift: takgate container has no --config argument")
    path = args[args.index("--config") + 1]
    for mount in container.get("volumeMounts", []):
        prefix = mount["mountPath"].rstrip("/") + "/"
        if path.startswith(prefix):
            vol = next(v for v in pod["volumes"] if v["name"] == mount["name"])
            if "configMap" not in vol:
                sys.exit(f"drift: {path} is on volume {vol['name']}, not a ConfigMap")
            cm_name = vol["configMap"]["name"]
            key = path[len(prefix) :]
            cms = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == cm_name]
            if not cms:
                sys.exit(f"drift: ConfigMap {cm_name} (mounted for {path}) is not rendered")
            data = cms[0].get("data", {})
            if key not in data:
                sys.exit(f"drift: ConfigMap {cm_name} has no key {key!r} (keys: {sorted(data)})")
            ok(f"--config {path} is key {key!r} of ConfigMap {cm_name}")
            return path, data[key]
    sys.exit(f"drift: --config {path} is not under any volumeMount of the takgate container")


def env_of(container, name):
    for e in container.get("env", []):
        if e["name"] == name:
            return e.get("value")
    return None


def mount_for(container, path):
    for m in container.get("volumeMounts", []):
        root = m["mountPath"].rstrip("/")
        if path == root or path.startswith(root + "/"):
            return m
    return None


def data_mounts(container, data_folder):
    root = data_folder.rstrip("/")
    return [
        m for m in container.get("volumeMounts", [])
        if m["mountPath"].rstrip("/") == root or m["mountPath"].startswith(root + "/")
    ]


def port_of(addr):
    return int(addr.rsplit(":", 1)[1])


def tls_paths(tls):
    return [tls[k] for k in ("cert", "key", "client_ca", "crl") if tls and tls.get(k)]


def static_checks(conf, dep, pod, container):
    """Config vs. container spec, without running anything."""
    secrets = secret_mounts(pod, container)
    data_folder = env_of(container, "OTS_DATA_FOLDER")
    if not data_folder:
        fail("takgate container has no OTS_DATA_FOLDER in its env (stream TLS defaults follow it)")
    else:
        # The whole folder, or (components/intermediate-signer) only parts of it: read-only.
        mounts = data_mounts(container, data_folder)
        if not mounts:
            fail(f"OTS_DATA_FOLDER={data_folder}: nothing of it is mounted into the takgate container")
        for m in mounts:
            where = m["mountPath"] + (f" (subPath {m['subPath']})" if m.get("subPath") else "")
            if not m.get("readOnly"):
                fail(f"OTS's data folder: {where} is mounted read-write into takgate")
            else:
                ok(f"OTS's data folder: {where} is mounted read-only (volume {m['name']})")

    for h in conf.get("http", []):
        root = h.get("ui_root", "/var/www/html/opentakserver")
        if h.get("profile") != "redirect" and not mount_for(container, root):
            fail(f"[[http]] {h['name']}: ui_root {root} is not under a volumeMount")
        for p in tls_paths(h.get("tls")):
            if not mount_for(container, p):
                fail(f"[[http]] {h['name']}: TLS file {p} is not under a volumeMount")
            elif data_folder and not any(
                p.startswith(d.rstrip("/") + "/") for d in [data_folder, *secrets]
            ):
                fail(f"[[http]] {h['name']}: TLS file {p} is neither in OTS_DATA_FOLDER nor a Secret")
    for s in conf.get("stream", []):
        for p in tls_paths(s.get("tls")):
            if not mount_for(container, p):
                fail(f"[[stream]] {s['name']}: TLS file {p} is not under a volumeMount")

    listeners = {}
    for kind in ("http", "stream"):
        for item in conf.get(kind, []):
            listeners[port_of(item["listen"])] = (kind, item)
    admin = conf.get("admin", {}).get("listen", "0.0.0.0:9100")
    listeners[port_of(admin)] = ("admin", {"name": "admin", "listen": admin})
    declared = {p["containerPort"]: p for p in container.get("ports", [])}
    for port, (kind, item) in sorted(listeners.items()):
        if port not in declared:
            fail(f"{kind} listener {item['name']} on port {port} has no containerPort")
    for port, p in sorted(declared.items()):
        if port not in listeners:
            fail(f"containerPort {p.get('name')}={port} has no takgate listener")
    if set(listeners) == set(declared):
        ok(f"listener ports == containerPorts: {sorted(declared)}")

    grace = parse_duration(conf.get("shutdown", {}).get("grace", "30s"))
    ws = parse_duration(conf.get("shutdown", {}).get("websocket_grace", "5s"))
    tgps = pod.get("terminationGracePeriodSeconds", 30)
    if max(grace, ws) >= tgps:
        fail(f"shutdown.grace {grace}s is not below terminationGracePeriodSeconds {tgps}")
    else:
        ok(f"shutdown.grace {grace}s < terminationGracePeriodSeconds {tgps}s")
    return listeners, declared, data_folder


def is_ssl_eud_handler(c):
    words = " ".join(c.get("command", []) + c.get("args", []))
    return "eud_handler" in words and "--ssl" in words


def is_tcp_eud_handler(c):
    """OTS's plain CoT server: eud_handler without --ssl or --udp (the stock command passes
    --no-ssl)."""
    words = " ".join(c.get("command", []) + c.get("args", []))
    return "eud_handler" in words and not re.search(r"(^|\s)--(ssl|udp)\b", words)


def ots_settings(docs):
    for d in docs:
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("ots-settings"):
            return d.get("data", {})
    return {}


def readiness_probes_port(c, port):
    cmd = (c.get("readinessProbe") or {}).get("exec", {}).get("command", [])
    return str(port) in " ".join(map(str, cmd))


def services_routing_to(docs, containers, port):
    """(Service, port name) pairs whose targetPort is `port`, by number or by the name one of
    `containers` gives it."""
    names = {p.get("name") for c in containers for p in c.get("ports", []) if p["containerPort"] == port}
    names.discard(None)
    return [
        (svc["metadata"]["name"], p.get("name"))
        for svc in docs if svc["kind"] == "Service"
        for p in svc["spec"].get("ports", [])
        if p.get("targetPort", p["port"]) == port or p.get("targetPort") in names
    ]


def netpols_letting_in(docs, pod_labels, containers, port):
    """NetworkPolicy ingress rules that let traffic in to this pod's `port` (a rule without
    ports lets every port in)."""
    names = {p.get("name") for c in containers for p in c.get("ports", []) if p["containerPort"] == port}
    names.discard(None)
    hits = []
    for np_ in (d for d in docs if d["kind"] == "NetworkPolicy"):
        sel = np_["spec"].get("podSelector") or {}
        if any(pod_labels.get(k) != v for k, v in (sel.get("matchLabels") or {}).items()):
            continue
        if "Ingress" not in np_["spec"].get("policyTypes", ["Ingress"]):
            continue
        for i, rule in enumerate(np_["spec"].get("ingress") or []):
            ports = rule.get("ports")
            if not ports or any(
                p.get("port") is None or p.get("port") in names
                or (isinstance(p.get("port"), int) and p["port"] <= port <= p.get("endPort", p["port"]))
                for p in ports
            ):
                hits.append(f"{np_['metadata']['name']} ingress[{i}]")
    return hits


# Stock ATAK's plain CoT (TCP 8088) as the NodePort Service offers it (deploy/README.md).
PLAIN_NODEPORT = 31088


def plain_checks(docs, pod, container, conf, pod_labels):
    """Listeners relaying to OTS's plain CoT port (plain, terminate): the upstream is the TCP
    eud_handler's containerPort and OTS_TCP_STREAMING_PORT, on no Service, let in by no
    NetworkPolicy; NodePort 31088 goes to a plain listener of takgate."""
    handlers = [c for c in pod["containers"] if is_tcp_eud_handler(c)]
    settings = ots_settings(docs)
    for s in conf.get("stream", []):
        mode = s.get("mode", "terminate")
        if mode not in ("plain", "terminate"):
            continue
        name = f"[[stream]] {s['name']} ({mode})"
        host, port = s["upstream"].rsplit(":", 1)
        port = int(port)
        if host not in ("127.0.0.1", "localhost", "[::1]"):
            fail(f"{name}: upstream {s['upstream']} is not the pod's loopback")
        owners = [
            c for c in handlers if any(p["containerPort"] == port for p in c.get("ports", []))
        ]
        if len(owners) != 1:
            fail(
                f"{name}: upstream port {port} is not the containerPort of exactly one TCP "
                f"`eud_handler` container (found {[c['name'] for c in handlers]})"
            )
        else:
            ok(f"{name}: upstream port {port} is containerPort of {owners[0]['name']} (eud_handler)")
            if not readiness_probes_port(owners[0], port):
                fail(f"{name}: {owners[0]['name']}'s readinessProbe does not check port {port}")
        ots_port = settings.get("OTS_TCP_STREAMING_PORT")
        if ots_port is None:
            fail(f"{name}: ConfigMap ots-settings has no OTS_TCP_STREAMING_PORT")
        elif int(ots_port) != port:
            fail(f"{name}: upstream port {port} != OTS_TCP_STREAMING_PORT {ots_port} (what OTS binds)")
        else:
            ok(f"{name}: upstream port == OTS_TCP_STREAMING_PORT {ots_port}")
        routed = services_routing_to(docs, owners, port)
        for svc, pname in routed:
            fail(f"{name}: Service {svc} (port {pname}) routes to eud_handler's port {port}")
        if not routed:
            ok(f"{name}: no Service routes to eud_handler's port {port}")
        if mode == "plain":
            # deploy/README and README promise takgate's own defaults here: change both with it.
            if s.get("limits"):
                fail(f"{name}: sets [stream.limits] {sorted(s['limits'])}; the docs promise takgate's defaults")
            else:
                ok(f"{name}: [stream.limits] at takgate's defaults")
        let_in = netpols_letting_in(docs, pod_labels, owners, port)
        for rule in let_in:
            fail(f"{name}: NetworkPolicy {rule} lets traffic in to eud_handler's port {port}")
        if not let_in:
            ok(f"{name}: no NetworkPolicy lets traffic in to eud_handler's port {port}")

    # Every NodePort goes to a takgate listener: no device reaches an OTS process past takgate.
    by_name = {pp.get("name"): pp["containerPort"] for pp in container.get("ports", [])}
    for svc in (d for d in docs if d["kind"] == "Service" and d["spec"].get("type") == "NodePort"):
        sel = svc["spec"].get("selector") or {}
        if not sel or any(pod_labels.get(k) != v for k, v in sel.items()):
            continue
        for p in svc["spec"].get("ports", []):
            tp = p.get("targetPort", p["port"])
            number = by_name.get(tp) if isinstance(tp, str) else tp
            if number not in by_name.values():
                fail(f"NodePort {p.get('nodePort')} (Service {svc['metadata']['name']}) targets "
                     f"{tp!r}, not a takgate listener")
            else:
                ok(f"NodePort {p.get('nodePort')} -> takgate {tp!r} ({number})")

    hits = [
        (svc["metadata"]["name"], p)
        for svc in docs if svc["kind"] == "Service"
        for p in svc["spec"].get("ports", [])
        if p.get("nodePort") == PLAIN_NODEPORT
    ]
    if len(hits) != 1:
        fail(f"NodePort {PLAIN_NODEPORT}: on {len(hits)} Service ports, want 1")
        return
    svc, p = hits[0]
    tp = p.get("targetPort", p["port"])
    number = by_name.get(tp) if isinstance(tp, str) else tp
    if number not in by_name.values():
        fail(f"NodePort {PLAIN_NODEPORT} (Service {svc}) targets {tp!r}, no containerPort of takgate")
        return
    listener = next((s for s in conf.get("stream", []) if port_of(s["listen"]) == number), None)
    if not listener or listener.get("mode") != "plain":
        fail(
            f"NodePort {PLAIN_NODEPORT} (Service {svc}) targets takgate's port {number}, which is "
            f"not a [[stream]] listener in mode plain"
        )
    else:
        ok(f"NodePort {PLAIN_NODEPORT} -> takgate {tp!r} ({number}): [[stream]] {listener['name']} (plain)")


def reoriginate_checks(docs, pod, container, conf, data_folder):
    """The wiring of every reoriginate listener: upstream, signer files, password Secret."""
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    ssl_handlers = [c for c in pod["containers"] if is_ssl_eud_handler(c)]
    settings = ots_settings(docs)
    for s in conf.get("stream", []):
        if s.get("mode") != "reoriginate":
            continue
        name = f"[[stream]] {s['name']} (reoriginate)"
        host, port = s["upstream"].rsplit(":", 1)
        port = int(port)
        if host not in ("127.0.0.1", "localhost", "[::1]"):
            fail(f"{name}: upstream {s['upstream']} is not the pod's loopback")
        owners = [
            c for c in ssl_handlers
            if any(p["containerPort"] == port for p in c.get("ports", []))
        ]
        if len(owners) != 1:
            fail(
                f"{name}: upstream port {port} is not the containerPort of exactly one "
                f"`eud_handler --ssl` container (found {[c['name'] for c in ssl_handlers]})"
            )
        else:
            ok(f"{name}: upstream port {port} is containerPort of {owners[0]['name']} (eud_handler --ssl)")
            owner = owners[0]
            probed = [
                k for k in ("startupProbe", "readinessProbe", "livenessProbe")
                if str(port) in " ".join(map(str, (owner.get(k) or {}).get("exec", {}).get("command", [])))
            ]
            if "readinessProbe" not in probed:
                fail(f"{name}: {owner['name']}'s readinessProbe does not check port {port}")
            if data_folder:
                m = mount_for(owner, data_folder)
                mine = {mm["name"] for mm in data_mounts(container, data_folder)}
                if not m or mine != {m["name"]}:
                    fail(f"{name}: {owner['name']} does not mount OTS's data folder {data_folder} "
                         f"from the volume takgate reads OTS's files from ({sorted(mine)})")
                else:
                    ok(f"{name}: {owner['name']} and takgate share OTS's data folder (volume {m['name']})")
        # What eud_handler --ssl binds: --bind-port of ots-init/eud_handler_ssl.py, not
        # OTS_SSL_STREAMING_PORT, which is the port devices are told (client packages, QR codes).
        binds = [
            int(m.group(1)) for c in owners
            for m in [re.search(r"--bind-port=(\d+)", " ".join(c.get("command", []) + c.get("args", [])))] if m
        ]
        if binds != [port]:
            fail(f"{name}: upstream port {port} is not what eud_handler --ssl binds (--bind-port {binds})")
        else:
            ok(f"{name}: upstream port == eud_handler --ssl's --bind-port {port}")
        ots_port = settings.get("OTS_SSL_STREAMING_PORT")
        listen_port = int(s["listen"].rsplit(":", 1)[1])
        names = {p.get("name") for p in container.get("ports", []) if p["containerPort"] == listen_port}
        client_ports = sorted(
            (p.get("nodePort") if svc["spec"].get("type") == "NodePort" else p["port"])
            for svc in docs if svc["kind"] == "Service" and svc["spec"].get("type") in ("NodePort", "LoadBalancer")
            for p in svc["spec"].get("ports", [])
            if p.get("targetPort", p["port"]) in names | {listen_port}
        )
        if ots_port is None:
            fail(f"{name}: ConfigMap ots-settings has no OTS_SSL_STREAMING_PORT")
        elif int(ots_port) == port:
            fail(f"{name}: OTS_SSL_STREAMING_PORT {ots_port} is eud_handler's pod-internal port, not one devices reach")
        elif int(ots_port) not in client_ports:
            fail(f"{name}: OTS_SSL_STREAMING_PORT {ots_port} (written into client packages) is not a port "
                 f"devices reach this listener on ({client_ports})")
        else:
            ok(f"{name}: OTS_SSL_STREAMING_PORT {ots_port} is a port devices reach it on ({client_ports})")
        for svc in (d for d in docs if d["kind"] == "Service"):
            for p in svc["spec"].get("ports", []):
                tp = p.get("targetPort", p["port"])
                names = {pp.get("name") for c in owners for pp in c.get("ports", []) if pp["containerPort"] == port}
                if tp == port or tp in names:
                    fail(f"{name}: Service {svc['metadata']['name']} routes to eud_handler --ssl's port {port}")

        r = s.get("reoriginate", {}) or {}
        # takgate's defaults: ca under $OTS_DATA_FOLDER, signer_cert = ca, signer_key beside ca.
        files = {"ca": r.get("ca") or (data_folder and f"{data_folder.rstrip('/')}/ca/ca.pem")}
        files["signer_cert"] = r.get("signer_cert") or files["ca"]
        files["signer_key"] = r.get("signer_key") or (
            files["ca"] and os.path.join(os.path.dirname(files["ca"]), "ca-do-not-share.key")
        )
        for key, path in files.items():
            m = path and mount_for(container, path)
            if not m:
                fail(f"{name}: {key} {path} is not under a volumeMount of the takgate container")
            elif not m.get("readOnly"):
                fail(f"{name}: {key} {path} is on a read-write mount ({m['name']})")
            else:
                ok(f"{name}: {key} {path} mounted read-only (volume {m['name']})")
        pw_file = r.get("signer_key_password_file")
        pw_env = r.get("signer_key_password_env", "OTS_CA_PASSWORD")
        ots_key = data_folder and f"{data_folder.rstrip('/')}/ca/ca-do-not-share.key"
        if files["signer_key"] != ots_key:
            # A dedicated signer (intermediate CA): OTS's own key must not be in reach at all.
            m = ots_key and mount_for(container, ots_key)
            if m:
                fail(f"{name}: signs with {files['signer_key']}, yet OTS's CA key {ots_key} is "
                     f"in takgate's filesystem (volume {m['name']})")
            else:
                ok(f"{name}: dedicated signer; OTS's CA key {ots_key} is not in takgate's filesystem")
            continue
        if pw_file:
            m = mount_for(container, pw_file)
            vol = vols.get(m["name"]) if m else None
            if not vol or "secret" not in vol:
                fail(f"{name}: signer_key_password_file {pw_file} is not on a Secret volume")
            else:
                key = pw_file[len(m["mountPath"].rstrip("/")) + 1 :]
                items = {i["path"]: i["key"] for i in vol["secret"].get("items", [])}
                others = [
                    c["name"] for c in pod["containers"] + pod.get("initContainers", [])
                    if c is not container and any(mm["name"] == vol["name"] for mm in c.get("volumeMounts", []))
                ]
                if items and key not in items:
                    fail(f"{name}: Secret volume {vol['name']} has no item for {key}")
                elif others:
                    fail(f"{name}: the password's Secret volume {vol['name']} is also mounted into {others}")
                else:
                    ok(
                        f"{name}: signer_key_password_file from Secret {vol['secret']['secretName']} "
                        f"key {items.get(key, key)}, mounted into takgate alone"
                    )
        else:
            e = next((e for e in container.get("env", []) if e["name"] == pw_env), None)
            if e is None:
                fail(f"{name}: no signer_key_password_file and no {pw_env} in takgate's env")
            elif "secretKeyRef" not in (e.get("valueFrom") or {}):
                fail(f"{name}: {pw_env} is not from a Secret (secretKeyRef)")
            else:
                ok(f"{name}: {pw_env} from Secret {e['valueFrom']['secretKeyRef']['name']}")
        if any("PASSWORD" in str(a).upper() or "PASS:" in str(a).upper() for a in container.get("args", []) + container.get("command", [])):
            fail(f"{name}: a password on takgate's command line")


def secret_roles(conf, pki):
    """Path in the pod -> test content, for every file the config names, by its key."""
    def read(p):
        with open(p) as f:
            return f.read()
    by_key = {
        "cert": read(pki["server_cert"]), "key": read(pki["server_key"]),
        "client_ca": read(pki["ca"]), "ca": read(pki["ca"]), "crl": read(pki["crl"]),
        "signer_cert": read(pki["signer_cert"]), "signer_key": read(pki["signer_key"]),
        "signer_key_password_file": CA_PASSWORD + "\n", "password_file": CA_PASSWORD + "\n",
        "token_file": "drift-test-token\n",
    }
    out = {}
    for kind in ("http", "stream"):
        for item in conf.get(kind, []):
            for section in (item.get("tls"), item.get("reoriginate"), item.get("identity")):
                for key, value in (section or {}).items():
                    if key in by_key and isinstance(value, str):
                        out[value] = by_key[key]
    return out


def secret_mounts(pod, container):
    """mountPath -> Secret volume, for the Secret volumes of the takgate container."""
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    return {
        m["mountPath"]: vols[m["name"]]
        for m in container.get("volumeMounts", [])
        if "secret" in vols.get(m["name"], {})
    }


def parse_duration(text):
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", text.strip())
    if not m:
        sys.exit(f"drift: cannot read duration {text!r}")
    n, unit = int(m.group(1)), m.group(2)
    return n / 1000 if unit == "ms" else n * {"s": 1, "m": 60, "h": 3600}[unit]


# ---------------------------------------------------------------- test PKI


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


CA_PASSWORD = "drift-" + os.urandom(8).hex()


def make_pki(ots):
    """OTS's layout: ca/ca.pem, ca/ca.crl, ca/certs/opentakserver/opentakserver.{pem,nopass.key}."""
    ca = os.path.join(ots, "ca")
    srv = os.path.join(ca, "certs", "opentakserver")
    cli = os.path.join(ca, "certs", "drift-user")
    for d in (srv, cli):
        os.makedirs(d, exist_ok=True)
    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=drift-test-CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=ca,
    )
    with open(os.path.join(ca, "ext.cnf"), "w") as f:
        f.write(
            "[srv]\nsubjectAltName=DNS:opentakserver,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
            "[cli]\nextendedKeyUsage=clientAuth\n"
        )
    for name, cn, ext, d in (
        ("opentakserver", "opentakserver", "srv", srv),
        ("drift-user", "drift-user", "cli", cli),
    ):
        openssl(
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{d}/{name}.key",
            "-out", f"{d}/{name}.csr", "-subj", f"/CN={cn}", cwd=ca,
        )
        openssl(
            "x509", "-req", "-in", f"{d}/{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-out", f"{d}/{name}.pem",
            "-extfile", "ext.cnf", "-extensions", ext, cwd=ca,
        )
        # As OTS does: an unencrypted copy of the key, written by `openssl rsa` (mode 0600).
        openssl("rsa", "-in", f"{d}/{name}.key", "-out", f"{d}/{name}.nopass.key", cwd=ca)
    with open(os.path.join(ca, "crl.cnf"), "w") as f:
        f.write(
            "[ca]\ndefault_ca=d\n[d]\ndatabase=index.txt\ncrlnumber=crlnumber\n"
            "default_md=sha256\ndefault_crl_days=2\n"
        )
    open(os.path.join(ca, "index.txt"), "w").close()
    with open(os.path.join(ca, "crlnumber"), "w") as f:
        f.write("01\n")
    openssl(
        "ca", "-config", "crl.cnf", "-gencrl", "-keyfile", "ca.key", "-cert", "ca.pem",
        "-out", "ca.crl", cwd=ca,
    )
    # OTS's CA key: encrypted PKCS#8 (`openssl req -passout pass:$OTS_CA_PASSWORD`).
    openssl(
        "pkcs8", "-topk8", "-in", "ca.key", "-out", "ca-do-not-share.key",
        "-passout", "pass:" + CA_PASSWORD, cwd=ca,
    )
    # A dedicated intermediate, made as deploy/README.md ("Signing with an intermediate CA")
    # says: EC P-256, CA:TRUE pathlen:0, keyCertSign/cRLSign, clientAuth, signed with -passin file:.
    inter = os.path.join(ca, "intermediate")
    os.makedirs(inter, exist_ok=True)
    with open(os.path.join(inter, "pass"), "w") as f:
        f.write(CA_PASSWORD + "\n")
    with open(os.path.join(inter, "signer.ext"), "w") as f:
        f.write(
            "basicConstraints = critical, CA:TRUE, pathlen:0\n"
            "keyUsage = critical, keyCertSign, cRLSign\n"
            "extendedKeyUsage = clientAuth\n"
            "subjectKeyIdentifier = hash\n"
            "authorityKeyIdentifier = keyid:always, issuer\n"
        )
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-out", "intermediate/signer.key", cwd=ca)
    openssl("req", "-new", "-key", "intermediate/signer.key", "-subj", "/CN=drift-test-signer",
            "-out", "intermediate/signer.csr", cwd=ca)
    openssl(
        "x509", "-req", "-in", "intermediate/signer.csr", "-CA", "ca.pem",
        "-CAkey", "ca-do-not-share.key", "-passin", "file:intermediate/pass", "-days", "90",
        "-sha256", "-set_serial", "0x" + os.urandom(16).hex(), "-extfile", "intermediate/signer.ext",
        "-out", "intermediate/signer.pem", cwd=ca,
    )
    return {
        "ca": os.path.join(ca, "ca.pem"),
        "crl": os.path.join(ca, "ca.crl"),
        "signer_cert": os.path.join(inter, "signer.pem"),
        "signer_key": os.path.join(inter, "signer.key"),
        "server_cert": os.path.join(srv, "opentakserver.pem"),
        "server_key": os.path.join(srv, "opentakserver.nopass.key"),
        "client_cert": os.path.join(cli, "drift-user.pem"),
        "client_key": os.path.join(cli, "drift-user.nopass.key"),
    }


# ---------------------------------------------------------------- fake OTS


class FakeApi(http.server.BaseHTTPRequestHandler):
    requests = []

    def do_GET(self):
        FakeApi.requests.append((self.command, self.path, dict(self.headers)))
        if self.path.startswith("/api/drift-broken"):
            self.close_connection = True  # no answer at all: takgate must say 502
            return
        if self.headers.get("Upgrade", "").lower() == "websocket":
            key = self.headers.get("Sec-WebSocket-Key", "")
            accept = base64.b64encode(
                hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
            ).decode()
            self.wfile.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept.encode() + b"\r\n\r\n"
            )
            self.wfile.flush()
            self.connection.settimeout(10)
            try:
                while self.connection.recv(4096):
                    pass
            except OSError:
                pass
            self.close_connection = True
            return
        body = b'{"status": "healthy"}' if self.path == "/api/health" else b'{"fake": "ots"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


class Sink(socketserver.ThreadingTCPServer):
    """A fake eud_handler: records every byte a connection sends."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self):
        self.received = bytearray()
        self.chunks = []  # each recv() as it came, to tell a frame written whole from pieces
        self.lock = threading.Lock()
        sink = self

        class H(socketserver.BaseRequestHandler):
            def handle(self):
                self.request.settimeout(10)
                try:
                    while True:
                        b = self.request.recv(65536)
                        if not b:
                            return
                        with sink.lock:
                            sink.received += b
                            sink.chunks.append(b)
                except OSError:
                    return

        super().__init__(("127.0.0.1", 0), H)


class SslSink(Sink):
    """A fake `eud_handler --ssl`: OTS's server certificate, client certificates required
    against OTS's CA (ssl.CERT_REQUIRED, as EudServerSSL does); records every byte and the
    subject CN and issuer of each client certificate it accepted."""

    def __init__(self, pki):
        super().__init__()
        self.peers = []
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_cert_chain(pki["server_cert"], pki["server_key"])
        ctx.load_verify_locations(cafile=pki["ca"])
        self.ctx = ctx
        inner = self.RequestHandlerClass
        sink = self

        class H(inner):
            def setup(self):
                self.request.settimeout(10)
                self.request = sink.ctx.wrap_socket(self.request, server_side=True)
                cert = self.request.getpeercert()
                subject = dict(x[0] for x in cert.get("subject", ()))
                issuer = dict(x[0] for x in cert.get("issuer", ()))
                with sink.lock:
                    sink.peers.append((subject.get("commonName"), issuer.get("commonName")))

            def handle(self):
                try:
                    super().handle()
                except (OSError, ssl.SSLError):
                    return

        self.RequestHandlerClass = H

    def handle_error(self, request, client_address):
        pass  # a refused handshake is what some probes want


def serve(server):
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


# ---------------------------------------------------------------- rewrite


def rewrite(text, data_folder, tmp_ots, ui_dir, api_url, sinks, make_sink, secret_dirs):
    """Loopback :0 listeners, fake upstreams, temp OTS data folder, temp copies of the Secret
    volumes. Textual, so the file under test is the ConfigMap's own text with only these values
    changed."""
    out = re.sub(r'(?m)^(\s*listen\s*=\s*)"[^"]*"', r'\1"127.0.0.1:0"', text)
    out = re.sub(r'(?m)^(\s*url\s*=\s*)"http://127\.0\.0\.1:8081/?"', rf'\1"{api_url}"', out)

    def up(m):
        orig = m.group(2)
        if orig not in sinks:
            sinks[orig] = serve(make_sink(orig))
        host, port = sinks[orig].server_address
        return f'{m.group(1)}"{host}:{port}"'

    out = re.sub(r'(?m)^(\s*upstream\s*=\s*)"([^"]*)"', up, out)
    out = re.sub(r'(?m)^(\s*ui_root\s*=\s*)"[^"]*"', rf'\1"{ui_dir}"', out)
    if data_folder:
        out = out.replace(f'"{data_folder.rstrip("/")}/', f'"{tmp_ots}/')
    for mount_path, tmp_dir in secret_dirs.items():
        out = out.replace(f'"{mount_path.rstrip("/")}/', f'"{tmp_dir}/')
    return out


# ---------------------------------------------------------------- probes


def http_get(addr, path, timeout=3, ctx=None, host="drift.test"):
    """Status code of GET path on addr ('127.0.0.1:port'); None when nothing answers."""
    h, p = addr.rsplit(":", 1)
    with socket.create_connection((h, int(p)), timeout=timeout) as raw:
        s = ctx.wrap_socket(raw, server_hostname="opentakserver") if ctx else raw
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while b"\r\n" not in data:
            b = s.recv(4096)
            if not b:
                break
            data += b
    m = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    return int(m.group(1)) if m else None


def websocket_upgrade(addr):
    """Status of a WebSocket upgrade on /socket.io (held open briefly, then closed)."""
    h, p = addr.rsplit(":", 1)
    key = base64.b64encode(os.urandom(16)).decode()
    with socket.create_connection((h, int(p)), timeout=3) as s:
        s.sendall(
            (
                "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: drift.test\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                f"Sec-WebSocket-Key: {key}\r\n\r\n"
            ).encode()
        )
        data = b""
        while b"\r\n\r\n" not in data:
            b = s.recv(4096)
            if not b:
                break
            data += b
        m = re.match(rb"HTTP/1\.1 (\d{3})", data)
        time.sleep(0.2)
    return int(m.group(1)) if m else None


def wait_status(addr, path, want, seconds):
    deadline = time.monotonic() + seconds
    last = None
    while time.monotonic() < deadline:
        try:
            last = http_get(addr, path)
            if last == want:
                return last
        except OSError as e:
            last = repr(e)
        time.sleep(0.2)
    return last


def client_ctx(pki, with_cert):
    ctx = ssl.create_default_context(cafile=pki["ca"])
    ctx.check_hostname = False
    if with_cert:
        ctx.load_cert_chain(pki["client_cert"], pki["client_key"])
    return ctx


COT = (
    b'<?xml version="1.0" encoding="UTF-8"?><event version="2.0" uid="drift-1" type="a-f-G-U-C" '
    b'time="2026-01-01T00:00:00Z" start="2026-01-01T00:00:00Z" stale="2026-01-01T00:05:00Z" '
    b'how="m-g"><point lat="1" lon="2" hae="0" ce="9" le="9"/><detail/></event>'
)


def wait_received(sink, needle, seconds=5):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with sink.lock:
            if needle in sink.received:
                return True
        time.sleep(0.05)
    return False


# Not CoT OTS could parse: a raw '<' in an attribute value (takgate refuses it as malformed).
MALFORMED = (
    b'<event version="2.0" uid="drift-plain-bad" type="a-f-G-U-C" how="m-g">'
    b'<detail remarks="a < b"/></event>'
)


def bytes_read(admin, listener):
    """takgate_stream_bytes_total{direction="to_upstream"} of one listener: what takgate has read
    from its clients."""
    metrics = urllib.request.urlopen(f"http://{admin}/metrics", timeout=5).read().decode()
    for line in metrics.splitlines():
        if (
            line.startswith("takgate_stream_bytes_total{")
            and f'listener="{listener}"' in line
            and 'direction="to_upstream"' in line
        ):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def wait_bytes_read(admin, listener, at_least, seconds=5):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if bytes_read(admin, listener) >= at_least:
            return True
        time.sleep(0.05)
    return False


def probe_plain(name, listener, admin, host, port, sink):
    """Plain CoT (no TLS): an event sent in two pieces (the second only once takgate has read the
    first) reaches the fake eud_handler whole, in one write; a malformed one after it never
    reaches it; the event after that does."""
    first = COT.replace(b'uid="drift-1"', b'uid="drift-plain-1"')
    last = COT.replace(b'uid="drift-1"', b'uid="drift-plain-2"')
    cut = first.index(b"<point")
    before = bytes_read(admin, listener)
    with socket.create_connection((host, port), timeout=3) as s:
        s.sendall(first[:cut])
        read_first = wait_bytes_read(admin, listener, before + cut)
        (ok if read_first else fail)(f"{name}: takgate read the event's first piece: {read_first}")
        s.sendall(first[cut:])
        got_first = wait_received(sink, b'uid="drift-plain-1"')
        s.sendall(MALFORMED)
        s.sendall(last)
        got_last = wait_received(sink, b'uid="drift-plain-2"')
    event = first[first.index(b"<event") :]
    with sink.lock:
        whole = any(event in c for c in sink.chunks)
        leaked = b"drift-plain-bad" in sink.received
    (ok if got_first and whole else fail)(
        f"{name}: plain TCP, CoT event sent in two pieces reached the upstream whole, in one "
        f"write: {got_first and whole}"
    )
    (ok if got_last and not leaked else fail)(
        f"{name}: malformed event not relayed ({not leaked}), the next event relayed ({got_last})"
    )


def frame_errors(metrics, listener):
    """The sum of takgate_cot_frame_errors_total samples for one listener."""
    total = 0.0
    for line in metrics.decode().splitlines():
        if line.startswith("takgate_cot_frame_errors_total{") and f'listener="{listener}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def probe_port(port, decl, kind, item, bound, pki, sinks_by_listener):
    name = f"containerPort {decl.get('name')}={port} ({kind} {item['name']})"
    if item["name"] not in bound:
        fail(f"{name}: takgate did not bind this listener (--bound-addrs lists {sorted(bound)})")
        return
    addr = bound[item["name"]]
    try:
        if kind == "admin":
            st = http_get(addr, "/metrics")
            (ok if st == 200 else fail)(f"{name}: GET /metrics -> {st}")
        elif kind == "http":
            tls = item.get("tls")
            if item.get("profile") == "redirect":
                # Nothing is served in plain HTTP: /Marti and the login API only redirect.
                for path in ("/Marti/api/version", "/api/login"):
                    st = http_get(addr, path)
                    (ok if st == 301 else fail)(f"{name}: GET {path} -> {st} (redirect)")
                return
            path = "/Marti/api/version" if item.get("profile") in ("marti",) else "/api/health"
            if item.get("profile") == "enroll":
                path = "/Marti/api/tls/config"
            ctx = None
            if tls:
                need_cert = tls.get("client_auth", "none") in ("required", "optional")
                ctx = client_ctx(pki, need_cert)
            st = http_get(addr, path, ctx=ctx)
            (ok if st == 200 else fail)(f"{name}: {'https' if tls else 'http'} GET {path} -> {st}")
            if not tls:
                st = http_get(addr, "/")
                (ok if st == 200 else fail)(f"{name}: GET / (web UI) -> {st}")
            if item.get("profile") == "web" and not tls:
                # Traffic the dashboard's panels need: an upstream error and a WebSocket.
                st = http_get(addr, "/api/drift-broken")
                (ok if st == 502 else fail)(f"{name}: upstream closes without answering -> {st}")
                st = websocket_upgrade(addr)
                (ok if st == 101 else fail)(f"{name}: Socket.IO WebSocket upgrade -> {st}")
            if tls and tls.get("client_auth") == "required":
                try:
                    http_get(addr, path, ctx=client_ctx(pki, False))
                    refused = False
                except (ssl.SSLError, OSError):
                    refused = True
                (ok if refused else fail)(f"{name}: client without certificate refused: {refused}")
        elif kind == "stream":
            sink = sinks_by_listener[item["name"]]
            mode = item.get("mode", "terminate")
            h, p = addr.rsplit(":", 1)
            if mode == "passthrough":
                marker = b"\x16\x03\x01drift-passthrough"
                with socket.create_connection((h, int(p)), timeout=3) as s:
                    s.sendall(marker)
                    got = wait_received(sink, marker)
                (ok if got else fail)(f"{name}: passthrough bytes reached the upstream: {got}")
            elif mode == "plain":
                probe_plain(name, item["name"], bound["admin"], h, int(p), sink)
            else:
                with socket.create_connection((h, int(p)), timeout=3) as raw:
                    with client_ctx(pki, True).wrap_socket(raw, server_hostname="opentakserver") as s:
                        s.sendall(COT)
                        needle = COT if mode != "raw" else COT[:40]
                        got = wait_received(sink, b'uid="drift-1"')
                (ok if got else fail)(
                    f"{name}: mutual TLS, CoT event relayed to the upstream ({mode}): {got}"
                )
                if mode == "reoriginate":
                    with sink.lock:
                        peers = list(sink.peers)
                    r = item.get("reoriginate", {}) or {}
                    # OTS's own key (the default) or a dedicated intermediate signer.
                    dedicated = not r.get("signer_key", "/ca/ca-do-not-share.key").endswith(
                        "/ca/ca-do-not-share.key"
                    )
                    want = ("drift-user", "drift-test-signer" if dedicated else "drift-test-CA")
                    (ok if want in peers else fail)(
                        f"{name}: fake eud_handler --ssl saw client certificates (CN, issuer) "
                        f"{peers}, want {want}"
                    )
                # A client without a certificate must be refused (and counted).
                try:
                    with socket.create_connection((h, int(p)), timeout=3) as raw:
                        with client_ctx(pki, False).wrap_socket(
                            raw, server_hostname="opentakserver"
                        ) as s:
                            s.sendall(COT)
                            s.recv(1)
                    refused = False
                except (ssl.SSLError, OSError):
                    refused = True
                if item.get("tls", {}).get("client_auth", "required") == "required":
                    (ok if refused else fail)(f"{name}: client without certificate refused: {refused}")
    except (OSError, ssl.SSLError) as e:
        fail(f"{name}: {e!r}")


# ---------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("rendered")
    ap.add_argument("takgate")
    ap.add_argument("workdir")
    ap.add_argument("--metrics-out")
    a = ap.parse_args()
    a.workdir = os.path.abspath(a.workdir)

    docs = load(a.rendered)
    dep, pod, container = takgate_parts(docs)
    print(f"drift: {a.rendered}: Deployment {dep['metadata']['name']}, container takgate")
    config_path, text = config_source(docs, pod, container)
    conf = tomllib.loads(text)
    listeners, declared, data_folder = static_checks(conf, dep, pod, container)
    reoriginate_checks(docs, pod, container, conf, data_folder)
    plain_checks(docs, pod, container, conf, dep["spec"]["template"]["metadata"].get("labels", {}))

    os.makedirs(a.workdir, exist_ok=True)
    tmp_ots = os.path.join(a.workdir, "ots")
    ui_dir = os.path.join(a.workdir, "ui")
    os.makedirs(ui_dir, exist_ok=True)
    with open(os.path.join(ui_dir, "index.html"), "w") as f:
        f.write("<!doctype html><title>OTS UI (drift test)</title>")
    pki = make_pki(tmp_ots)

    api = serve(http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeApi))
    api_url = f"http://127.0.0.1:{api.server_address[1]}"
    sinks = {}
    modes = {s["upstream"]: s.get("mode", "terminate") for s in conf.get("stream", [])}

    def make_sink(upstream):
        return SslSink(pki) if modes.get(upstream) == "reoriginate" else Sink()

    # Each Secret volume of the takgate container as a temporary folder, each file filled with
    # the test material for the role the config gives its path.
    secret_dirs = {}
    roles = secret_roles(conf, pki)
    for mount_path, vol in secret_mounts(pod, container).items():
        d = os.path.join(a.workdir, "secrets", vol["name"])
        os.makedirs(d, exist_ok=True)
        for item in vol["secret"].get("items", []) or []:
            path = f"{mount_path.rstrip('/')}/{item['path']}"
            if path not in roles:
                fail(f"Secret volume {vol['name']}: {path} is mounted into takgate but no config key uses it")
                continue
            with open(os.path.join(d, item["path"]), "w") as f:
                f.write(roles[path])
        secret_dirs[mount_path] = d
    new_text = rewrite(text, data_folder, tmp_ots, ui_dir, api_url, sinks, make_sink, secret_dirs)
    new_conf = tomllib.loads(new_text)
    for kind in ("http", "stream"):
        for item in new_conf.get(kind, []):
            if item["listen"] != "127.0.0.1:0":
                fail(f"rewrite missed listener {item['name']}")
    if new_conf.get("admin", {}).get("listen", "127.0.0.1:0") != "127.0.0.1:0":
        # takgate's default admin address is 0.0.0.0:9100: the config must set it.
        fail("rewrite missed [admin] listen")
    if "admin" not in new_conf or "listen" not in new_conf.get("admin", {}):
        fail("[admin] listen is not set in the config (its default is 0.0.0.0:9100)")
    left = [v for v in strings(new_conf) if data_folder and v.startswith(data_folder)]
    if left:
        fail(f"rewritten config still names the pod's OTS data folder: {left}")
    sinks_by_listener = {
        s["name"]: sinks[orig["upstream"]]
        for s, orig in zip(new_conf.get("stream", []), conf.get("stream", []))
    }
    cfg = os.path.join(a.workdir, os.path.basename(config_path))
    with open(cfg, "w") as f:
        f.write(new_text)

    env = dict(os.environ, OTS_DATA_FOLDER=tmp_ots, RUST_LOG="warn")
    for e in container.get("env", []):
        if "secretKeyRef" in (e.get("valueFrom") or {}):
            env[e["name"]] = CA_PASSWORD
    left = [v for v in strings(new_conf) if any(v.startswith(m.rstrip("/") + "/") for m in secret_dirs)]
    if left:
        fail(f"rewritten config still names a Secret mount of the pod: {left}")
    r = subprocess.run(
        [a.takgate, "check", "--config", cfg], env=env, capture_output=True, text=True, timeout=30
    )
    if r.returncode != 0:
        fail(f"takgate check --config rejected the config (rc {r.returncode}):\n{r.stderr}{r.stdout}")
        return finish()
    ok("takgate check --config accepts the rendered config")

    bound_file = os.path.join(a.workdir, "bound.json")
    if os.path.exists(bound_file):
        os.remove(bound_file)
    log = open(os.path.join(a.workdir, "takgate.log"), "w")
    proc = subprocess.Popen(
        [a.takgate, "--config", cfg, "--bound-addrs", bound_file],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 15
        while not os.path.exists(bound_file) and time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        if not os.path.exists(bound_file):
            fail(f"takgate did not bind its listeners within 15 s (rc {proc.poll()})")
            return finish()
        time.sleep(0.1)
        with open(bound_file) as f:
            b = json.load(f)
        bound = {**b.get("http", {}), **b.get("stream", {}), "admin": b["admin"]}
        bound = {k: str(v) for k, v in bound.items()}
        ok(f"takgate started, bound {len(bound)} listeners")

        # Every probe the container declares, on the port it names.
        by_name = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = container.get(kind)
            if not probe:
                fail(f"takgate container has no {kind}")
                continue
            if "httpGet" not in probe:
                fail(f"{kind} is not an httpGet probe")
                continue
            port = probe["httpGet"]["port"]
            port = by_name.get(port) if isinstance(port, str) else port
            owner = listeners.get(port)
            if not owner:
                fail(f"{kind} port {probe['httpGet']['port']} is no takgate listener")
                continue
            st = wait_status(bound[owner[1]["name"]], probe["httpGet"]["path"], 200, 15)
            (ok if st == 200 else fail)(f"{kind} GET {probe['httpGet']['path']} -> {st}")

        for port, decl in sorted(declared.items()):
            if port in listeners:
                kind, item = listeners[port]
                probe_port(port, decl, kind, item, bound, pki, sinks_by_listener)

        metrics = urllib.request.urlopen(f"http://{bound['admin']}/metrics", timeout=5).read()
        for s in conf.get("stream", []):
            if s.get("mode") == "plain":
                n = frame_errors(metrics, s["name"])
                (ok if n >= 1 else fail)(
                    f"[[stream]] {s['name']} (plain): the malformed event counted in "
                    f"takgate_cot_frame_errors_total: {n:g}"
                )
        if a.metrics_out:
            with open(a.metrics_out, "wb") as f:
                f.write(metrics)

        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=40)
            (ok if rc == 0 else fail)(f"SIGTERM: takgate exited with {rc}")
        except subprocess.TimeoutExpired:
            fail("SIGTERM: takgate still running after 40 s")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        log.close()
        if FAILURES:
            with open(os.path.join(a.workdir, "takgate.log")) as f:
                print("---- takgate log (tail) ----\n" + "".join(f.readlines()[-30:]))
    return finish()


def strings(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)
    elif isinstance(value, str):
        yield value


def finish():
    if FAILURES:
        print(f"drift: {len(FAILURES)} failed")
        return 1
    print("drift: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
