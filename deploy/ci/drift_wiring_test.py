"""The drift test's wiring checks (reoriginate, plain CoT) catch the mistakes they are for.

Usage: drift_wiring_test.py RENDERED.yaml [--intermediate RENDERED.yaml] [--terminate RENDERED.yaml]
  RENDERED.yaml: an overlay whose cot-tls listener re-originates with OTS's CA key and whose
  cot-tcp listener (mode plain) takes NodePort 31088 (dev);
  --intermediate: one that signs with a dedicated intermediate CA (prod-intermediate-ca);
  --terminate: one whose cot-tls terminates and relays to OTS's plain port (prod-terminate).

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


def pod_labels(docs):
    dep, _, _ = d.takgate_parts(docs)
    return dep["spec"]["template"]["metadata"].get("labels", {})


def run(docs):
    """The FAILURES drift_test's static checks report for these manifests."""
    d.FAILURES.clear()
    with contextlib.redirect_stdout(io.StringIO()):  # drift_test's own ok/FAIL lines
        pod, container = parts(docs)
        _, text = d.config_source(docs, pod, container)
        conf = tomllib.loads(text)
        _, _, data_folder = d.static_checks(conf, None, pod, container)
        d.reoriginate_checks(docs, pod, container, conf, data_folder)
        d.plain_checks(docs, pod, container, conf, pod_labels(docs))
    return list(d.FAILURES)


def container(docs, name):
    pod, _ = parts(docs)
    return next(c for c in pod["containers"] if c["name"] == name)


def ssl_handler(docs):
    pod, _ = parts(docs)
    return next(c for c in pod["containers"] if d.is_ssl_eud_handler(c))


def tcp_handler(docs):
    pod, _ = parts(docs)
    return next(c for c in pod["containers"] if d.is_tcp_eud_handler(c))


def node_port_service(docs):
    return next(x for x in docs if x["kind"] == "Service" and x["spec"].get("type") == "NodePort")


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


def advertise_internal(docs):
    settings(docs)["data"]["OTS_SSL_STREAMING_PORT"] = "18089"


def bind_other(docs):
    c = ssl_handler(docs)
    c["command"] = [w.replace("--bind-port=18089", "--bind-port=18090") for w in c["command"]]


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


def set_tcp_port(docs):
    tcp_handler(docs)["ports"][0]["containerPort"] = 18089


def set_tcp_settings(docs):
    settings(docs)["data"]["OTS_TCP_STREAMING_PORT"] = "8088"


def expose_tcp(docs):
    name = tcp_handler(docs)["ports"][0]["name"]
    node_port_service(docs)["spec"]["ports"].append(
        {"name": "oops", "port": 9999, "targetPort": name, "nodePort": 31999}
    )


def plain_node_port(docs):
    svc = node_port_service(docs)
    return next(p for p in svc["spec"]["ports"] if p.get("nodePort") == d.PLAIN_NODEPORT)


def old_wiring(docs):
    # 31088 straight to OTS's eud_handler, as before takgate's plain listener.
    plain_node_port(docs)["targetPort"] = tcp_handler(docs)["ports"][0]["name"]


def not_plain(docs):
    plain_node_port(docs)["targetPort"] = "cot-tls"


def let_in_tcp(docs):
    np_ = next(x for x in docs if x["kind"] == "NetworkPolicy" and x["metadata"]["name"] == "opentakserver")
    np_["spec"]["ingress"][0]["ports"].append({"port": tcp_handler(docs)["ports"][0]["containerPort"]})


def plain_limits(docs):
    takgate_config(docs, lambda t: t.replace(
        'mode = "plain"\n', 'mode = "plain"\nlimits = { events_per_second = 0 }\n'
    ))


def tcp_unprobed(docs):
    tcp_handler(docs)["readinessProbe"]["exec"]["command"][-1] = "8088"


CASES = [
    ("upstream is not eud_handler --ssl's containerPort", set_port, "is not the containerPort"),
    ("OTS advertises a port no Service exposes the listener on", set_settings, "is not a port devices reach"),
    ("OTS advertises eud_handler's pod-internal port", advertise_internal, "pod-internal port"),
    ("eud_handler --ssl binds another port than takgate's upstream", bind_other, "is not what eud_handler --ssl binds"),
    ("password file not mounted", drop_mount("takgate", "/run/secrets/takgate"), "not on a Secret volume"),
    ("password Secret shared with OTS", share_secret, "also mounted into"),
    ("a Service routes to eud_handler --ssl", expose, "routes to eud_handler --ssl"),
    ("eud_handler --ssl readiness probes another port", unprobed, "readinessProbe does not check"),
    ("signer key on a read-write mount", writable, "read-write"),
    ("password as a literal env value", literal_env, "not from a Secret"),
    ("eud_handler --ssl reads another data volume", other_ssl_data, "does not mount OTS's data folder"),
    ("plain upstream is not eud_handler's containerPort", set_tcp_port, "exactly one TCP `eud_handler`"),
    ("OTS binds another plain CoT port", set_tcp_settings, "OTS_TCP_STREAMING_PORT"),
    ("a Service routes to eud_handler", expose_tcp, "routes to eud_handler's port"),
    ("a NetworkPolicy lets clients in to eud_handler", let_in_tcp, "lets traffic in to eud_handler's port"),
    ("NodePort 31088 straight to eud_handler (the old wiring)", old_wiring, "no containerPort of takgate"),
    ("NodePort 31088 to a listener that is not plain", not_plain, "not a [[stream]] listener in mode plain"),
    ("a NodePort past takgate, to eud_handler --ssl", expose, "not a takgate listener"),
    ("eud_handler readiness probes another port", tcp_unprobed, "eud-handler's readinessProbe does not check"),
    ("plain listener overrides [stream.limits]", plain_limits, "the docs promise takgate's defaults"),
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


def terminate_old_port(docs):
    takgate_config(docs, lambda t: t.replace(
        'upstream = "127.0.0.1:18088"\nmode = "terminate"', 'upstream = "127.0.0.1:8088"\nmode = "terminate"'
    ))


# For an overlay whose cot-tls terminates and relays to OTS's plain port (components/terminate).
TERMINATE_CASES = [
    ("terminate relays to a port eud_handler does not bind", terminate_old_port, "exactly one TCP `eud_handler`"),
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
    if len(args) % 2 != 1 or any(a not in ("--intermediate", "--terminate") for a in args[1::2]):
        sys.exit(__doc__)
    total, failed = check(args[0], CASES)
    extra = {"--intermediate": INTERMEDIATE_CASES, "--terminate": TERMINATE_CASES}
    for flag, path in zip(args[1::2], args[2::2]):
        t, f = check(path, extra[flag])
        total, failed = total + t, failed + f
    print(f"drift_wiring_test: {total - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
