"""The drift test's reoriginate wiring checks catch the mistakes they are for.

Usage: drift_wiring_test.py RENDERED.yaml [--intermediate RENDERED.yaml]
  RENDERED.yaml: an overlay whose cot-tls listener re-originates with OTS's CA key (dev);
  --intermediate: one that signs with a dedicated intermediate CA (prod-intermediate-ca).

Runs drift_test's static checks (no takgate binary) on the rendered manifests as they are (no
failure expected), then on copies each broken in one way, and expects a failure naming it.
Exit status 0 when every broken copy is caught and the original passes.
"""

import contextlib
import copy
import io
import sys
import tomllib

import yaml

import drift_test as d


def parts(docs):
    dep, pod, container = d.takgate_parts(docs)
    return pod, container


def run(docs):
    """The FAILURES drift_test's static checks report for these manifests."""
    d.FAILURES.clear()
    with contextlib.redirect_stdout(io.StringIO()):  # drift_test's own ok/FAIL lines
        pod, container = parts(docs)
        _, text = d.config_source(docs, pod, container)
        conf = tomllib.loads(text)
        _, _, data_folder = d.static_checks(conf, None, pod, container)
        d.reoriginate_checks(docs, pod, container, conf, data_folder)
    return list(d.FAILURES)


def container(docs, name):
    pod, _ = parts(docs)
    return next(c for c in pod["containers"] if c["name"] == name)


def ssl_handler(docs):
    pod, _ = parts(docs)
    return next(c for c in pod["containers"] if d.is_ssl_eud_handler(c))


def settings(docs):
    return next(
        x for x in docs if x["kind"] == "ConfigMap" and x["metadata"]["name"].startswith("ots-settings")
    )


def takgate_config(docs, edit):
    pod, tg = parts(docs)
    path = tg["args"][tg["args"].index("--config") + 1]
    vol_name = next(m["name"] for m in tg["volumeMounts"] if path.startswith(m["mountPath"]))
    cm_name = next(v for v in pod["volumes"] if v["name"] == vol_name)["configMap"]["name"]
    cm = next(x for x in docs if x["kind"] == "ConfigMap" and x["metadata"]["name"] == cm_name)
    key = path.rsplit("/", 1)[1]
    cm["data"][key] = edit(cm["data"][key])


def drop_mount(name, mount_path):
    def f(docs):
        c = container(docs, name)
        c["volumeMounts"] = [m for m in c["volumeMounts"] if m["mountPath"] != mount_path]
    return f


def set_port(docs):
    ssl_handler(docs)["ports"][0]["containerPort"] = 31090


def set_settings(docs):
    settings(docs)["data"]["OTS_SSL_STREAMING_PORT"] = "8089"


def share_secret(docs):
    container(docs, "eud-handler")["volumeMounts"].append(
        {"name": "takgate-secrets", "mountPath": "/run/secrets/x", "readOnly": True}
    )


def expose(docs):
    svc = next(x for x in docs if x["kind"] == "Service" and x["spec"].get("type") == "NodePort")
    name = ssl_handler(docs)["ports"][0]["name"]
    svc["spec"]["ports"].append({"name": "oops", "port": 9999, "targetPort": name, "nodePort": 31999})


def unprobed(docs):
    ssl_handler(docs)["readinessProbe"]["exec"]["command"][-1] = "8088"


def writable(docs):
    for m in container(docs, "takgate")["volumeMounts"]:
        if m["mountPath"] == "/app/ots":
            m["readOnly"] = False


def literal_env(docs):
    takgate_config(docs, lambda t: t.replace('signer_key_password_file = "/run/secrets/takgate/ca-password"\n', ""))
    container(docs, "takgate")["env"].append({"name": "OTS_CA_PASSWORD", "value": "atakatak"})


def other_ssl_data(docs):
    c = ssl_handler(docs)
    for m in c["volumeMounts"]:
        if m["mountPath"] == "/app/ots":
            m["name"] = "tmp"


CASES = [
    ("upstream is not eud_handler --ssl's containerPort", set_port, "is not the containerPort"),
    ("OTS binds another port", set_settings, "OTS_SSL_STREAMING_PORT"),
    ("password file not mounted", drop_mount("takgate", "/run/secrets/takgate"), "not on a Secret volume"),
    ("password Secret shared with OTS", share_secret, "also mounted into"),
    ("a Service routes to eud_handler --ssl", expose, "routes to eud_handler --ssl"),
    ("eud_handler --ssl readiness probes another port", unprobed, "readinessProbe does not check"),
    ("signer key on a read-write mount", writable, "read-write"),
    ("password as a literal env value", literal_env, "not from a Secret"),
    ("eud_handler --ssl reads another data volume", other_ssl_data, "does not mount OTS's data folder"),
]


def root_key_back(docs):
    container(docs, "takgate")["volumeMounts"].append(
        {"name": "data", "mountPath": "/app/ots", "readOnly": True}
    )


# For an overlay with a dedicated signer (components/intermediate-signer).
INTERMEDIATE_CASES = [
    ("OTS's whole data folder (and its CA key) mounted again", root_key_back, "yet OTS's CA key"),
    ("signer key not mounted", drop_mount("takgate", "/run/secrets/takgate-signer"), "signer_key"),
]


def check(path, cases):
    with open(path, encoding="utf-8") as f:
        docs = [x for x in yaml.safe_load_all(f) if x]
    failed = 0
    print(f"-- {path} as rendered")
    base = run(docs)
    if base:
        print(f"FAIL the rendered manifests already fail: {base}")
        failed += 1
    for title, mutate, needle in cases:
        broken = copy.deepcopy(docs)
        mutate(broken)
        got = run(broken)
        if any(needle in g for g in got):
            print(f"ok   caught: {title}")
        else:
            print(f"FAIL not caught: {title} (failures: {got})")
            failed += 1
    return len(cases) + 1, failed


def main():
    args = sys.argv[1:]
    if len(args) not in (1, 3) or (len(args) == 3 and args[1] != "--intermediate"):
        sys.exit(__doc__)
    total, failed = check(args[0], CASES)
    if len(args) == 3:
        t, f = check(args[2], INTERMEDIATE_CASES)
        total, failed = total + t, failed + f
    print(f"drift_wiring_test: {total - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
