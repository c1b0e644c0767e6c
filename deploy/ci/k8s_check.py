"""Offline checks of rendered manifests: what kubernetes-validate's CLI and checkov leave out.

Usage: k8s_check.py K8S_VERSION RENDERED.yaml [MORE.yaml...] [--external-secret NAME=KEY,KEY...]...

1. Strict schema of every object for the given Kubernetes minor version (kubernetes-validate's
   bundled schemas), reporting every error, not only the first; an object without a schema is
   an error, except prometheus-operator kinds, which are checked in 2.
2. prometheus-operator objects (ServiceMonitor, PrometheusRule, ...) against the CRD models of
   the cloudcoil-models-prometheus-operator package (types, enums, patterns), plus unknown
   fields, which those models would silently ignore.
3. What the API server or the project's rules would refuse: DNS names, nodePort range and
   clashes, duplicate port names, selectors vs. template labels, image tags, resources,
   securityContext, probes, recommended labels.
4. References between objects: Service selectors and target ports, probe ports, volumes,
   ConfigMaps and Secrets (the Secret that deploy/secrets creates outside the kustomization is
   passed as a second file, or named with --external-secret), ServiceMonitor selector and port, prometheus.io/port,
   NetworkPolicy ports (every port a Service routes to must be let in), PDB selectors, and
   takgate's admin port never on a NodePort Service.

Exit status 1 if anything is wrong; every problem is printed.
"""

import argparse
import inspect
import re
import sys
import types
import typing

import jsonschema
import kubernetes_validate.utils as kvu
import pydantic
import referencing
import yaml

ERRORS = []
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass"}
RECOMMENDED = ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/part-of",
               "app.kubernetes.io/managed-by")
ADMIN_PORT_NAME = "admin"


def err(obj, msg):
    ERRORS.append(f"{ident(obj)}: {msg}")


def ident(obj):
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


# ---------------------------------------------------------------- 1. schemas


def schema_errors(obj, version):
    try:
        kvu.validate(obj, version, strict=True)
        return []
    except kvu.SchemaNotFoundError:
        raise
    except kvu.ValidationError:
        pass
    # Collect every error, not only the first one the package reports.
    api_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", obj["apiVersion"])
    found = [v for v in kvu.all_versions() if kvu.major_minor(v) <= kvu.major_minor(version)][-1]
    d = f"kubernetes-json-schema/v{found}-local-strict"
    schema = kvu.schema_contents(f"{d}/{obj['kind'].lower()}-{api_version}.json", version)
    defs = kvu.schema_contents(f"{d}/_definitions.json", version)
    registry = referencing.Resource.from_contents(defs) @ (
        referencing.Resource.from_contents(schema) @ referencing.Registry()
    )
    v = jsonschema.validators.Draft202012Validator(schema, registry=registry)
    return [
        f"{'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}"
        for e in sorted(v.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
    ]


# ---------------------------------------------------------------- 2. CRDs


def crd_models():
    from cloudcoil.models.prometheus_operator import v1, v1alpha1

    return {f"monitoring.coreos.com/{m.__name__.rsplit('.', 1)[1]}": m for m in (v1, v1alpha1)}


def model_types(tp):
    """(container, model) pairs reachable in a field annotation; container is None/list/dict."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        return model_types(args[0])
    if origin in (typing.Union, types.UnionType):
        return [x for a in args for x in model_types(a)]
    if origin in (list, typing.List):
        return [("list", m) for _, m in model_types(args[0])]
    if origin in (dict, typing.Dict):
        return [("dict", m) for _, m in model_types(args[1])]
    if inspect.isclass(tp) and issubclass(tp, pydantic.BaseModel):
        return [(None, tp)]
    return []


def unknown_fields(model, data, path, out):
    if not isinstance(data, dict):
        return
    fields = {}
    for name, f in model.model_fields.items():
        fields[f.alias or name] = f
        fields[name] = f
    for key, value in data.items():
        f = fields.get(key)
        if f is None:
            out.append(f"{path}.{key}: unknown field")
            continue
        for container, sub in model_types(f.annotation):
            if container == "list" and isinstance(value, list):
                for i, item in enumerate(value):
                    unknown_fields(sub, item, f"{path}.{key}[{i}]", out)
            elif container == "dict" and isinstance(value, dict):
                for k, item in value.items():
                    unknown_fields(sub, item, f"{path}.{key}.{k}", out)
            elif container is None:
                unknown_fields(sub, value, f"{path}.{key}", out)


def check_crd(obj, models):
    module = models.get(obj["apiVersion"])
    model = getattr(module, obj["kind"], None) if module else None
    if model is None:
        err(obj, f"no CRD model for {obj['apiVersion']} {obj['kind']}")
        return
    try:
        model.model_validate(obj)
    except pydantic.ValidationError as e:
        for x in e.errors():
            err(obj, f"CRD schema: {'.'.join(str(p) for p in x['loc'])}: {x['msg']}")
    unknown = []
    unknown_fields(model, obj, obj["kind"], unknown)
    for u in unknown:
        err(obj, f"CRD schema: {u}")


# ---------------------------------------------------------------- 3. per object


def pod_template(obj):
    if obj["kind"] in WORKLOADS:
        return obj["spec"]["template"]
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]
    return None


def pod_spec(obj):
    if pod_template(obj) is not None:
        return pod_template(obj)["spec"]
    if obj["kind"] == "Pod":
        return obj["spec"]
    return None


def template_labels(obj):
    if pod_template(obj) is not None:
        return pod_template(obj).get("metadata", {}).get("labels", {}) or {}
    return obj.get("metadata", {}).get("labels", {}) or {}


def matches(selector, labels):
    if not selector:
        return False
    ml = selector.get("matchLabels", selector if "matchExpressions" not in selector else {})
    if "matchLabels" not in selector and "matchExpressions" not in selector:
        ml = selector
    if any(labels.get(k) != v for k, v in ml.items()):
        return False
    for expr in selector.get("matchExpressions", []) or []:
        k, op, vals = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(k) not in vals:
            return False
        if op == "NotIn" and labels.get(k) in vals:
            return False
        if op == "Exists" and k not in labels:
            return False
        if op == "DoesNotExist" and k in labels:
            return False
    return True


def check_object(obj, namespace):
    md = obj.get("metadata", {})
    name = md.get("name", "")
    pattern = DNS1035_LABEL if obj["kind"] == "Service" else DNS1123_SUBDOMAIN
    if not pattern.match(name) or len(name) > (63 if obj["kind"] == "Service" else 253):
        err(obj, f"name {name!r} is not a valid DNS name for a {obj['kind']}")
    if obj["kind"] not in CLUSTER_SCOPED and md.get("namespace") != namespace:
        err(obj, f"namespace {md.get('namespace')!r}, expected {namespace!r}")
    labels = md.get("labels", {}) or {}
    needed = RECOMMENDED if obj["kind"] not in ("Namespace", "ConfigMap", "NetworkPolicy") else RECOMMENDED[2:]
    for key in needed:
        if key not in labels:
            err(obj, f"missing recommended label {key}")
    if obj["kind"] == "Service":
        names, ports = set(), set()
        for p in obj["spec"].get("ports", []):
            if p.get("name") in names:
                err(obj, f"duplicate port name {p.get('name')}")
            names.add(p.get("name"))
            if p["port"] in ports:
                err(obj, f"duplicate port {p['port']}")
            ports.add(p["port"])
            np_ = p.get("nodePort")
            if np_ is not None and not 30000 <= np_ <= 32767:
                err(obj, f"nodePort {np_} outside 30000-32767")
            if np_ is not None and obj["spec"].get("type") not in ("NodePort", "LoadBalancer"):
                err(obj, f"nodePort set on a {obj['spec'].get('type', 'ClusterIP')} Service")
    spec = pod_spec(obj)
    if spec is None:
        return
    sel = obj["spec"].get("selector") if obj["kind"] != "Pod" else None
    if obj["kind"] in WORKLOADS and not matches(sel, template_labels(obj)):
        err(obj, "spec.selector does not match the pod template's labels")
    for key in RECOMMENDED[:2] + ("app.kubernetes.io/component",):
        if key not in template_labels(obj):
            err(obj, f"pod template misses recommended label {key}")
    psc = spec.get("securityContext", {}) or {}
    if spec.get("automountServiceAccountToken") is not False:
        err(obj, "automountServiceAccountToken is not false")
    exempt = {
        c.strip()
        for c in (obj["metadata"].get("annotations", {}) or {}).get("takgate/probe-exempt", "").split(",")
        if c.strip()
    }
    vols = {v["name"]: v for v in spec.get("volumes", []) or []}
    vols.update({t["metadata"]["name"]: {"pvc": True} for t in obj["spec"].get("volumeClaimTemplates", []) or []})
    for c in spec.get("initContainers", []) + spec["containers"]:
        init = c in spec.get("initContainers", [])
        where = f"{'initContainer' if init else 'container'} {c['name']}"
        image = c.get("image", "")
        tag = image.rsplit("@", 1)[0].rsplit("/", 1)[-1]
        if not image:
            err(obj, f"{where}: no image")
        elif "@sha256:" not in image and (":" not in tag or tag.endswith(":latest")):
            err(obj, f"{where}: image {image!r} is not pinned to a tag")
        res = c.get("resources", {}) or {}
        for kind in ("requests", "limits"):
            for r in ("cpu", "memory"):
                if r not in (res.get(kind) or {}):
                    err(obj, f"{where}: no {kind}.{r}")
        sc = c.get("securityContext", {}) or {}
        if sc.get("allowPrivilegeEscalation") is not False:
            err(obj, f"{where}: allowPrivilegeEscalation is not false")
        if sc.get("readOnlyRootFilesystem") is not True:
            err(obj, f"{where}: readOnlyRootFilesystem is not true")
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            err(obj, f"{where}: capabilities do not drop ALL")
        if sc.get("capabilities", {}).get("add"):
            err(obj, f"{where}: adds capabilities")
        if not (sc.get("runAsNonRoot", psc.get("runAsNonRoot"))):
            err(obj, f"{where}: runAsNonRoot is not set")
        if sc.get("runAsUser", psc.get("runAsUser")) == 0:
            err(obj, f"{where}: runs as uid 0")
        seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if seccomp != "RuntimeDefault":
            err(obj, f"{where}: seccompProfile is not RuntimeDefault")
        if not init and c["name"] not in exempt:
            for probe in ("readinessProbe", "livenessProbe"):
                if probe not in c:
                    err(obj, f"{where}: no {probe}")
        if init and any(p in c for p in ("readinessProbe", "livenessProbe", "startupProbe")):
            err(obj, f"{where}: init containers cannot have probes")
        ports = {p.get("name"): p["containerPort"] for p in c.get("ports", []) or []}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            handler = (c.get(probe) or {})
            for h in ("httpGet", "tcpSocket", "grpc"):
                port = (handler.get(h) or {}).get("port")
                if isinstance(port, str) and port not in ports:
                    err(obj, f"{where}: {probe} port {port!r} is not a containerPort name")
                if isinstance(port, int) and port not in ports.values():
                    err(obj, f"{where}: {probe} port {port} is not a containerPort")
        for m in c.get("volumeMounts", []) or []:
            if m["name"] not in vols:
                err(obj, f"{where}: volumeMount {m['name']!r} has no volume")
    for e in exempt:
        if e not in {c["name"] for c in spec["containers"]}:
            err(obj, f"takgate/probe-exempt names {e!r}, which is no container")


# ---------------------------------------------------------------- 4. references


def pods(objs):
    """(workload, pod labels, pod spec) of every workload."""
    return [(o, template_labels(o), pod_spec(o)) for o in objs if pod_spec(o) is not None]


def container_ports(spec):
    out = {}
    for c in spec["containers"]:
        for p in c.get("ports", []) or []:
            out[p["containerPort"]] = (p.get("name"), c["name"])
    return out


def check_refs(objs, external_secrets):
    by_kind = {}
    for o in objs:
        by_kind.setdefault(o["kind"], {})[o["metadata"]["name"]] = o
    cms = by_kind.get("ConfigMap", {})
    secrets = {n: set((o.get("data") or {}) | (o.get("stringData") or {})) for n, o in by_kind.get("Secret", {}).items()}
    secrets.update(external_secrets)
    workloads = pods(objs)

    for w, labels, spec in workloads:
        ann = (w["spec"].get("template", {}).get("metadata", {}).get("annotations") or {}) if w["kind"] != "Pod" else {}
        if ann.get("prometheus.io/scrape") == "true":
            port = ann.get("prometheus.io/port")
            if not port or int(port) not in container_ports(spec):
                err(w, f"prometheus.io/port {port} is not a containerPort of the pod")
        for v in spec.get("volumes", []) or []:
            if "configMap" in v and v["configMap"]["name"] not in cms:
                err(w, f"volume {v['name']}: ConfigMap {v['configMap']['name']} is not rendered")
            if "configMap" in v:
                keys = set((cms.get(v["configMap"]["name"], {}).get("data") or {}))
                for it in v["configMap"].get("items", []) or []:
                    if it["key"] not in keys:
                        err(w, f"volume {v['name']}: ConfigMap has no key {it['key']}")
            if "secret" in v:
                name = v["secret"]["secretName"]
                if name not in secrets:
                    err(w, f"volume {v['name']}: Secret {name} is neither rendered nor created by deploy/secrets")
                for it in v["secret"].get("items", []) or []:
                    if name in secrets and it["key"] not in secrets[name]:
                        err(w, f"volume {v['name']}: Secret {name} has no key {it['key']}")
            if "persistentVolumeClaim" in v and v["persistentVolumeClaim"]["claimName"] not in by_kind.get("PersistentVolumeClaim", {}):
                err(w, f"volume {v['name']}: PVC {v['persistentVolumeClaim']['claimName']} is not rendered")
        for c in spec.get("initContainers", []) + spec["containers"]:
            for ef in c.get("envFrom", []) or []:
                if "configMapRef" in ef and ef["configMapRef"]["name"] not in cms:
                    err(w, f"{c['name']}: envFrom ConfigMap {ef['configMapRef']['name']} is not rendered")
                if "secretRef" in ef and ef["secretRef"]["name"] not in secrets:
                    err(w, f"{c['name']}: envFrom Secret {ef['secretRef']['name']} is unknown")
            for e in c.get("env", []) or []:
                ref = (e.get("valueFrom") or {})
                if "secretKeyRef" in ref:
                    s = ref["secretKeyRef"]
                    if s["name"] not in secrets or s["key"] not in secrets[s["name"]]:
                        err(w, f"{c['name']}: env {e['name']}: Secret {s['name']} key {s['key']} is unknown")
                if "configMapKeyRef" in ref:
                    s = ref["configMapKeyRef"]
                    if s["key"] not in (cms.get(s["name"], {}).get("data") or {}):
                        err(w, f"{c['name']}: env {e['name']}: ConfigMap {s['name']} key {s['key']} is unknown")

    services = by_kind.get("Service", {})
    for svc in services.values():
        sel = svc["spec"].get("selector")
        if not sel:
            continue
        targets = [(w, spec) for w, labels, spec in workloads if matches(sel, labels)]
        if not targets:
            err(svc, f"selector {sel} matches no pod template")
            continue
        for p in svc["spec"].get("ports", []):
            tp = p.get("targetPort", p["port"])
            for w, spec in targets:
                cp = container_ports(spec)
                if isinstance(tp, str) and tp not in {n for n, _ in cp.values()}:
                    err(svc, f"port {p.get('name')}: targetPort {tp!r} is no containerPort name of {ident(w)}")
                if isinstance(tp, int) and tp not in cp:
                    err(svc, f"port {p.get('name')}: targetPort {tp} is no containerPort of {ident(w)}")
                number = tp if isinstance(tp, int) else next((n for n, (nm, _) in cp.items() if nm == tp), None)
                if svc["spec"].get("type") in ("NodePort", "LoadBalancer") and (
                    tp == ADMIN_PORT_NAME or p.get("name") == ADMIN_PORT_NAME
                    or (number is not None and cp.get(number, (None,))[0] == ADMIN_PORT_NAME)
                ):
                    err(svc, f"port {p.get('name')}: takgate's admin port must not be on a {svc['spec']['type']} Service")
                if number is not None and not allowed_by_netpol(objs, w, number):
                    err(svc, f"port {p.get('name')}: no NetworkPolicy lets traffic in to {ident(w)} port {number}")

    node_ports = {}
    for svc in services.values():
        for p in svc["spec"].get("ports", []):
            if p.get("nodePort"):
                if p["nodePort"] in node_ports:
                    err(svc, f"nodePort {p['nodePort']} also used by {node_ports[p['nodePort']]}")
                node_ports[p["nodePort"]] = ident(svc)

    for sm in by_kind.get("ServiceMonitor", {}).values():
        hits = [s for s in services.values() if matches(sm["spec"].get("selector"), s["metadata"].get("labels", {}) or {})]
        if not hits:
            err(sm, "selector matches no Service")
        for ep in sm["spec"].get("endpoints", []):
            for s in hits:
                if ep.get("port") and ep["port"] not in {p.get("name") for p in s["spec"].get("ports", [])}:
                    err(sm, f"endpoint port {ep['port']!r} is not a named port of Service {s['metadata']['name']}")

    for np_ in by_kind.get("NetworkPolicy", {}).values():
        sel = np_["spec"].get("podSelector", {})
        hits = [(w, spec) for w, labels, spec in workloads if sel == {} or matches(sel, labels)]
        if sel and not hits:
            err(np_, "podSelector matches no pod")
        for rule in np_["spec"].get("ingress", []) or []:
            for p in rule.get("ports", []) or []:
                for w, spec in hits:
                    cp = container_ports(spec)
                    port = p.get("port")
                    if isinstance(port, int) and port not in cp:
                        err(np_, f"port {port} is no containerPort of {ident(w)}")
                    if isinstance(port, str) and port not in {n for n, _ in cp.values()}:
                        err(np_, f"port {port!r} is no containerPort name of {ident(w)}")

    for pdb in by_kind.get("PodDisruptionBudget", {}).values():
        if not any(matches(pdb["spec"].get("selector"), labels) for _, labels, _ in workloads):
            err(pdb, "selector matches no pod")


def allowed_by_netpol(objs, workload, port):
    """True if NetworkPolicies let some traffic in to this pod's port (or none select it)."""
    labels = template_labels(workload)
    selecting = [
        o for o in objs
        if o["kind"] == "NetworkPolicy"
        and "Ingress" in o["spec"].get("policyTypes", ["Ingress"])
        and (o["spec"].get("podSelector") == {} or matches(o["spec"].get("podSelector"), labels))
    ]
    if not selecting:
        return True
    name = container_ports(pod_spec(workload)).get(port, (None,))[0]
    for o in selecting:
        for rule in o["spec"].get("ingress", []) or []:
            ports = rule.get("ports")
            if not ports:
                return True
            if any(p.get("port") in (port, name) for p in ports):
                return True
    return False


# ---------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("version")
    ap.add_argument("rendered", nargs="+")
    ap.add_argument("--namespace", default="tak")
    ap.add_argument("--external-secret", action="append", default=[])
    a = ap.parse_args()
    external = {}
    for spec in a.external_secret:
        name, _, keys = spec.partition("=")
        external[name] = {k for k in keys.split(",") if k}
    objs = []
    for path in a.rendered:
        with open(path, encoding="utf-8") as f:
            objs += [d for d in yaml.safe_load_all(f) if d]
    seen = set()
    for o in objs:
        key = (o.get("apiVersion"), o.get("kind"), o.get("metadata", {}).get("name"))
        if key in seen:
            err(o, "defined twice")
        seen.add(key)
    models = crd_models()
    for o in objs:
        try:
            for e in schema_errors(o, a.version):
                err(o, f"schema (Kubernetes {a.version}, strict): {e}")
        except kvu.SchemaNotFoundError:
            if o["apiVersion"].startswith("monitoring.coreos.com/"):
                check_crd(o, models)
            else:
                err(o, f"no schema for {o['apiVersion']} {o['kind']} in Kubernetes {a.version}")
        check_object(o, a.namespace)
    check_refs(objs, external)
    for e in ERRORS:
        print(f"ERROR {a.rendered[0]}: {e}")
    print(f"k8s_check: {' + '.join(a.rendered)}: {len(objs)} objects, {len(ERRORS)} errors")
    return 1 if ERRORS else 0


if __name__ == "__main__":
    sys.exit(main())
