"""Checks the tern Helm chart offline, as an operator would meet it.

For the default values and every file in helm/tern/examples/:
  - `helm lint --strict` passes;
  - `helm template` renders, and every object validates strictly against the
    Kubernetes API schemas (kubernetes-validate) of the oldest and newest
    versions the chart supports;
  - the rendered objects are what a deployment needs: a StatefulSet of
    gateways named by pod, probes and resources on every container, a PDB
    per multi-pod workload, the Services clients and the API need;
  - secure by default: dev mode off, no secret in a ConfigMap, each pod
    only the secrets it uses, the back-end API only on a ClusterIP Service,
    nothing but the gateways and the user API exposed, and NetworkPolicies
    (when enabled) that open each port to exactly the peers the values name;
  - the config file the pods read is accepted by the real `tern-server`
    (`--check-config`), with each container's own environment.
And values a user gets wrong are refused with a message naming the mistake;
secrets tern-server would refuse (short, placeholder words) and dev mode are
refused by the chart, and the real tern-server refuses them too.

Run by helm/test.sh (which installs helm and kubernetes-validate); needs
PyYAML (kubernetes-validate brings it) and the tern-server binary.
"""

import base64
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

CHART = Path(__file__).resolve().parent.parent / "tern"
HELM = os.environ["HELM"]
KUBERNETES_VALIDATE = os.environ["KUBERNETES_VALIDATE"]
TERN_SERVER = os.environ["TERN_SERVER"]
# The oldest Kubernetes the chart claims (Chart.yaml kubeVersion) and the
# newest kubernetes-validate knows.
KUBE_VERSIONS = ["1.25.0", "1.37.0"]
RELEASE = "chat"
# tern-server reads these from the environment only, never from the config.
SECRET_SETTINGS = ["jwt_secret", "jwt_secret_previous", "backend_token", "admin_token"]
# Which secrets each component's pod gets (least privilege).
SECRET_ENV = {
    "gateway": {"TERN_JWT_SECRET", "TERN_JWT_SECRET_PREVIOUS"},
    "api": {"TERN_JWT_SECRET", "TERN_JWT_SECRET_PREVIOUS", "TERN_BACKEND_TOKEN", "TERN_ADMIN_TOKEN"},
    "persister": {"TERN_JWT_SECRET"},
    "router": {"TERN_JWT_SECRET"},
    "archiver": {"TERN_JWT_SECRET"},
}

failures = []


def check(ok, what):
    if not ok:
        failures.append(what)
        print(f"  FAIL {what}")


def run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, **kw)


def helm_template(values_file=None, sets=()):
    args = [HELM, "template", RELEASE, str(CHART), "--kube-version", KUBE_VERSIONS[-1]]
    if values_file:
        args += ["-f", str(values_file)]
    for s in sets:
        args += ["--set", s]
    return run(args)


def containers(obj):
    spec = obj.get("spec", {})
    pod = spec.get("template", {}).get("spec") or spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec", {})
    return pod.get("containers", []) if pod else []


def stand_in(secret, key):
    """A random-looking value for a key of a Secret the chart does not make
    (auth.existingSecret): 64 hex digits, as `openssl rand -hex 32` gives."""
    return hashlib.sha256(f"{secret}/{key}".encode()).hexdigest()


def env_of(container, secrets):
    """The container's environment, secret references resolved from the
    rendered Secrets (an optional key they lack stays unset), or stand-ins
    for an existing Secret."""
    rendered = {name for name, _ in secrets}
    env = {}
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        elif "secretKeyRef" in e.get("valueFrom", {}):
            ref = e["valueFrom"]["secretKeyRef"]
            if (ref["name"], ref["key"]) in secrets:
                env[e["name"]] = secrets[(ref["name"], ref["key"])]
            elif ref["name"] not in rendered:
                env[e["name"]] = stand_in(ref["name"], ref["key"])
            else:
                check(ref.get("optional"), f"{container['name']}: {e['name']} refers to {ref['key']}, which the rendered Secret lacks")
        elif "fieldRef" in e.get("valueFrom", {}):
            env[e["name"]] = "pod-name-0"
    return env


def tern_server_check(toml, env):
    """`tern-server --check-config` on a config file and environment."""
    with tempfile.TemporaryDirectory() as d:
        Path(d, "tern.toml").write_text(toml)
        env = {**env, "TERN_CONFIG": str(Path(d, "tern.toml")), "TERN_DATA_DIR": d}
        return run([TERN_SERVER, "--check-config"], env={"PATH": os.environ["PATH"], **env})


def pod_labels(w):
    return w["spec"]["template"]["metadata"]["labels"]


def selects(selector, labels):
    """Whether a NetworkPolicy podSelector (matchLabels only, as the chart
    writes them) selects a pod with these labels."""
    check(set(selector) <= {"matchLabels"}, f"unexpected podSelector {selector}")
    return selector.get("matchLabels", {}).items() <= labels.items()


def allowed_peers(policies, labels, port_name, port_number):
    """Who may reach a pod's port under these NetworkPolicies: None when no
    policy selects the pod for ingress (everyone), "anyone" when a rule
    without `from` opens the port, else the list of peers of the rules that
    open it (empty: nobody)."""
    selecting = [p for p in policies if selects(p["spec"]["podSelector"], labels)
                 and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])]
    if not selecting:
        return None
    peers = []
    for p in selecting:
        for rule in p["spec"].get("ingress") or []:
            ports = rule.get("ports")
            if ports and not any(q.get("port") in (port_name, port_number) for q in ports):
                continue
            if not rule.get("from"):
                return "anyone"
            peers += rule["from"]
    return peers


def check_rendering(name, values_file):
    print(f"{name}:")
    lint = [HELM, "lint", "--strict", str(CHART), "--kube-version", KUBE_VERSIONS[-1]]
    if values_file:
        lint += ["-f", str(values_file)]
    r = run(lint)
    check(r.returncode == 0, f"{name}: helm lint --strict fails:\n{r.stdout}{r.stderr}")
    r = helm_template(values_file)
    check(r.returncode == 0, f"{name}: helm template fails:\n{r.stderr}")
    if r.returncode != 0:
        return
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(r.stdout)
        rendered = f.name
    for kv in KUBE_VERSIONS:
        v = run([KUBERNETES_VALIDATE, "--strict", "--quiet", "--no-warn", "-k", kv, rendered])
        check(v.returncode == 0, f"{name}: objects invalid for Kubernetes {kv}:\n{v.stdout}{v.stderr}")
    os.unlink(rendered)
    docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    if values_file:
        values = merge(values, yaml.safe_load(Path(values_file).read_text()))

    # Gateways: a StatefulSet, whose pod name is the node id.
    sts = by_kind.get("StatefulSet", {}).get(f"{RELEASE}-tern-gateway")
    check(sts is not None, f"{name}: no gateway StatefulSet")
    if sts:
        env = {e["name"]: e for e in containers(sts)[0]["env"]}
        check(env.get("TERN_NODE_ID", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name",
              f"{name}: gateway node id is not the pod name")
        ports = {p["name"] for p in by_kind["Service"][f"{RELEASE}-tern-gateway"]["spec"]["ports"]}
        check(ports == {"tcp", "ws"}, f"{name}: gateway Service ports are {ports}")
        check(by_kind["Service"][f"{RELEASE}-tern-gateway"]["spec"]["type"] == values["gateway"]["service"]["type"],
              f"{name}: gateway Service type differs from values")
    check(f"{RELEASE}-tern-api" in by_kind.get("Service", {}), f"{name}: no API Service")
    workloads = {**by_kind.get("Deployment", {}), **by_kind.get("StatefulSet", {})}
    expected = {"gateway", "persister", "router", "api"} | ({"archiver"} if values["archive"]["enabled"] else set())
    check({w.rsplit("-", 1)[1] for w in workloads} == expected, f"{name}: workloads {sorted(workloads)}, expected {sorted(expected)}")
    secrets = {}
    for s in by_kind.get("Secret", {}).values():
        for k, v in s.get("data", {}).items():
            secrets[(s["metadata"]["name"], k)] = base64.b64decode(v).decode()
    toml = by_kind["ConfigMap"][f"{RELEASE}-tern"]["data"]["tern.toml"]
    check(("otlp_endpoint" in toml) == bool(values["tracing"]["otlpEndpoint"]), f"{name}: tracing settings in the config")
    check("\ndev_mode = false\n" in toml and toml.count("dev_mode") == 1, f"{name}: the config does not turn dev mode off:\n{toml}")
    check_no_secret_in_config(name, by_kind, secrets, workloads)
    check_services(name, by_kind, values, toml)
    check_network_policies(name, by_kind, values, workloads)
    check(f"shutdown_delay_ms = {values['shutdownDelaySeconds'] * 1000}\n" in toml, f"{name}: shutdown delay in the config")
    for wname, w in workloads.items():
        component = wname.rsplit("-", 1)[1]
        c = containers(w)[0]
        check("readinessProbe" in c and "livenessProbe" in c, f"{name}: {wname} lacks probes")
        check(c.get("resources", {}).get("requests"), f"{name}: {wname} has no resource requests")
        replicas = w["spec"].get("replicas")
        hpa = by_kind.get("HorizontalPodAutoscaler", {}).get(wname)
        if component == "archiver":
            check(replicas == 1 and w["spec"]["strategy"]["type"] == "Recreate", f"{name}: the archiver must be one pod, recreated")
        elif values[component]["autoscaling"]["enabled"]:
            check(hpa is not None and replicas is None, f"{name}: {wname} should be scaled by its HPA only")
        else:
            check(hpa is None and replicas == values[component]["replicas"], f"{name}: {wname} replicas")
        pdb = by_kind.get("PodDisruptionBudget", {}).get(wname)
        if component != "archiver":
            check((pdb is not None) == values[component]["pdb"]["enabled"], f"{name}: {wname} PDB presence")
        if pdb:
            check(pdb["spec"]["selector"]["matchLabels"] == w["spec"]["selector"]["matchLabels"], f"{name}: {wname} PDB selects other pods")
        # Each pod gets only the secrets it uses, and only from a Secret.
        secret_env = {e["name"] for e in c["env"] if "secretKeyRef" in e.get("valueFrom", {}) and e["name"].startswith("TERN_")}
        check(secret_env == SECRET_ENV[component], f"{name}: {wname} gets the secrets {sorted(secret_env)}, expected {sorted(SECRET_ENV[component])}")
        for e in c["env"]:
            check(e["name"].lower().removeprefix("tern_") not in SECRET_SETTINGS or "value" not in e,
                  f"{name}: {wname} has {e['name']} in plain text")
        # The real binary accepts the config file with this container's environment.
        env = env_of(c, secrets)
        if component == "api" and not values["auth"]["existingSecret"]:
            check(len(env.get("TERN_BACKEND_TOKEN", "")) >= 32, f"{name}: the API pod has no back-end token")
        r = tern_server_check(toml, env)
        check(r.returncode == 0, f"{name}: tern-server refuses the {component} pod's settings:\n{r.stdout}{r.stderr}")
        service = component
        check(r.returncode != 0 or f"services {service}," in r.stdout, f"{name}: the {component} pod would not run {service}: {r.stdout!r}")
    job = by_kind.get("Job", {}).get(f"{RELEASE}-tern-migrate")
    check((job is not None) == values["migrations"]["enabled"], f"{name}: migration Job presence")
    if job:
        check("pre-upgrade" in job["metadata"]["annotations"]["helm.sh/hook"], f"{name}: the migration Job is no pre-upgrade hook")
    sm = by_kind.get("ServiceMonitor", {}).get(f"{RELEASE}-tern")
    check((sm is not None) == values["metrics"]["serviceMonitor"]["enabled"], f"{name}: ServiceMonitor presence")
    if sm:
        # kubernetes-validate has no schema for this CRD: check what it needs.
        svc = by_kind["Service"][f"{RELEASE}-tern-metrics"]
        check(sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items(), f"{name}: the ServiceMonitor selects no Service")
        check(sm["spec"]["endpoints"][0]["port"] in {p["name"] for p in svc["spec"]["ports"]}, f"{name}: ServiceMonitor port")
    dash = by_kind.get("ConfigMap", {}).get(f"{RELEASE}-tern-dashboard")
    check((dash is not None) == values["metrics"]["dashboard"]["enabled"], f"{name}: dashboard presence")
    if dash:
        panels = json.loads(dash["data"]["tern.json"]).get("panels", [])
        check(len(panels) >= 6, f"{name}: the dashboard has {len(panels)} panels")


def check_no_secret_in_config(name, by_kind, secrets, workloads):
    """No ConfigMap holds a secret: neither a secret setting nor any value
    of the rendered Secrets (or of the stand-ins for an existing one)."""
    values = {v for v in secrets.values() if len(v) >= 8}
    for w in workloads.values():
        values |= {v for k, v in env_of(containers(w)[0], secrets).items() if k.lower().removeprefix("tern_") in SECRET_SETTINGS}
    check(values, f"{name}: no secret values found to look for")
    for cm_name, cm in by_kind.get("ConfigMap", {}).items():
        for key, data in cm.get("data", {}).items():
            for setting in SECRET_SETTINGS:
                check(f"{setting} " not in data and f"{setting}=" not in data, f"{name}: ConfigMap {cm_name} sets {setting}")
            for v in values:
                check(v not in data, f"{name}: ConfigMap {cm_name} ({key}) contains a secret value")


def check_services(name, by_kind, values, toml):
    """The back-end API has its own ClusterIP Service over the API pods; only
    the gateways and the user API may be exposed outside the cluster."""
    services = by_kind.get("Service", {})
    api = by_kind["Deployment"][f"{RELEASE}-tern-api"]
    backend = services.get(f"{RELEASE}-tern-backend")
    check(backend is not None, f"{name}: no back-end Service {RELEASE}-tern-backend")
    port = values["api"]["backendService"]["port"]
    check(f'\nbackend_listen = "0.0.0.0:{port}"\n' in toml, f"{name}: backend_listen is not 0.0.0.0:{port}")
    check(f'\napi_listen = "0.0.0.0:{values["api"]["service"]["port"]}"\n' in toml, f"{name}: api_listen")
    container_ports = {p["name"]: p["containerPort"] for p in containers(api)[0]["ports"]}
    check(container_ports.get("backend") == port, f"{name}: the API container's backend port is {container_ports.get('backend')}")
    if backend:
        check(backend["spec"].get("type", "ClusterIP") == "ClusterIP" and backend["spec"].get("clusterIP") != "None",
              f"{name}: the back-end Service is {backend['spec'].get('type')}, not ClusterIP")
        check(backend["spec"]["selector"] == api["spec"]["selector"]["matchLabels"], f"{name}: the back-end Service does not select the API pods")
        check([(p["name"], p["port"], p["targetPort"]) for p in backend["spec"]["ports"]] == [("backend", port, "backend")],
              f"{name}: back-end Service ports {backend['spec']['ports']}")
    for sname, svc in services.items():
        if sname not in (f"{RELEASE}-tern-gateway", f"{RELEASE}-tern-api"):
            check(svc["spec"].get("type", "ClusterIP") == "ClusterIP", f"{name}: Service {sname} is {svc['spec'].get('type')}")
        check("backend" not in {p.get("targetPort") for p in svc["spec"]["ports"]} or sname == f"{RELEASE}-tern-backend",
              f"{name}: Service {sname} exposes the back-end port")
    for kind in ("Ingress", "Gateway", "HTTPRoute", "GRPCRoute"):
        check(kind not in by_kind, f"{name}: the chart renders an {kind}")


def check_network_policies(name, by_kind, values, workloads):
    """With networkPolicy.enabled, every tern pod is isolated: the gateway
    and user API ports open to anyone, the back-end port to backendClients
    only, the admin port to monitoringClients only, and nothing else."""
    np = values["networkPolicy"]
    policies = list(by_kind.get("NetworkPolicy", {}).values())
    check(bool(policies) == np["enabled"], f"{name}: {len(policies)} NetworkPolicies with networkPolicy.enabled {np['enabled']}")
    if not np["enabled"]:
        return
    for wname, w in workloads.items():
        component = wname.rsplit("-", 1)[1]
        labels = pod_labels(w)
        ports = {p["name"]: p["containerPort"] for p in containers(w)[0]["ports"]}
        for port_name, number in ports.items():
            expected = {"tcp": "anyone", "ws": "anyone", "grpc": "anyone",
                        "backend": np["backendClients"], "admin": np["monitoringClients"]}[port_name]
            got = allowed_peers(policies, labels, port_name, number)
            check(got == expected, f"{name}: {component} port {port_name} is open to {got}, expected {expected}")
        # A port the pod does not declare (the back-end port of a gateway, say).
        check(allowed_peers(policies, labels, "other", 9) == [], f"{name}: {component} accepts traffic on undeclared ports")
    job = by_kind.get("Job", {}).get(f"{RELEASE}-tern-migrate")
    if job:
        labels = job["spec"]["template"]["metadata"]["labels"]
        check(allowed_peers(policies, labels, "other", 9) == [], f"{name}: the migration Job accepts traffic")


def check_dashboard():
    """Every series the dashboard queries is a documented metric (the
    metrics test keeps docs/metrics.md equal to what tern serves)."""
    import re
    print("dashboard queries:")
    doc = (CHART.parent.parent / "docs" / "metrics.md").read_text()
    documented = {m.group(1): m.group(2) for m in re.finditer(r"^\| `(tern_[a-z_]+)` \| (\w+) \|", doc, re.M)}
    check(len(documented) > 30, f"docs/metrics.md lists {len(documented)} metrics")
    dashboard = json.loads((CHART / "files" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    check(len(exprs) >= 10, f"the dashboard has {len(exprs)} queries")
    for expr in exprs:
        for series in re.findall(r"\b(tern_[a-z_]+)", expr):
            base = re.sub(r"_(bucket|sum|count)$", "", series)
            kind = documented.get(base)
            check(kind is not None, f"dashboard queries {series}, which docs/metrics.md does not list")
            if series != base:
                check(kind == "histogram", f"dashboard queries {series} of a {kind}")
            if "rate(" in expr and kind in ("counter",):
                check(base.endswith("_total"), f"counter {base} without _total")


def merge(base, over):
    out = dict(base)
    for k, v in (over or {}).items():
        out[k] = merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def check_refused(what, sets, words, values=None):
    print(f"refused: {what}")
    if values is not None:
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            yaml.safe_dump(values, f)
        r = helm_template(f.name, sets)
        os.unlink(f.name)
    else:
        r = helm_template(sets=sets)
    check(r.returncode != 0, f"{what}: helm template accepted it")
    for w in words:
        check(w in r.stderr, f"{what}: the error does not mention {w!r}:\n{r.stderr}")


def check_variant(name, values):
    """check_rendering on the default values with some changed."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(values, f)
    check_rendering(name, f.name)
    os.unlink(f.name)


def random_secret(label):
    return hashlib.sha256(f"check_chart {label} {os.getpid()}".encode()).hexdigest()


def check_server_refuses(what, toml_edit, env_edit, words):
    """The real tern-server refuses the API pod's rendered settings once
    changed as a careless operator might (the chart refuses them first)."""
    print(f"tern-server refuses: {what}")
    r = helm_template()
    docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(r.stdout) if d}
    toml = toml_edit(docs[("ConfigMap", f"{RELEASE}-tern")]["data"]["tern.toml"])
    secrets = {}
    for (kind, sname), d in docs.items():
        if kind == "Secret":
            secrets |= {(sname, k): base64.b64decode(v).decode() for k, v in d["data"].items()}
    env = env_of(containers(docs[("Deployment", f"{RELEASE}-tern-api")])[0], secrets)
    for k, v in env_edit.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    r = tern_server_check(toml, env)
    check(r.returncode == 64, f"{what}: tern-server accepts it (exit {r.returncode}):\n{r.stdout}{r.stderr}")
    for w in words:
        check(w in r.stdout + r.stderr, f"{what}: tern-server's error does not mention {w!r}:\n{r.stderr}")


def check_examples_hold_no_secrets(examples):
    """Examples refer to an existing Secret or let the chart generate one:
    nothing someone could copy and deploy with."""
    print("examples hold no secrets:")
    for f in [CHART / "values.yaml", *examples]:
        auth = (yaml.safe_load(f.read_text()) or {}).get("auth", {})
        for key in ("jwtSecret", "jwtSecretPrevious", "backendToken", "adminToken"):
            check(not auth.get(key), f"{f.name} sets auth.{key}: use auth.existingSecret")
        check("devMode" not in auth, f"{f.name} sets auth.devMode")
        if f in examples:
            text = f.read_text().lower()
            for word in ("change-me", "changeme", "change_me", "password"):
                check(word not in text, f"{f.name} contains {word!r}")


def main():
    check_rendering("default values", None)
    examples = sorted((CHART / "examples").glob("*.yaml"))
    check(len(examples) >= 2, "fewer than two example values files")
    for f in examples:
        check_rendering(f"examples/{f.name}", f)
    check_examples_hold_no_secrets(examples)
    check_variant("network policies without clients", {"networkPolicy": {"enabled": True}})
    check_variant("network policies, archive, every secret in values", {
        "networkPolicy": {"enabled": True,
                          "backendClients": [{"podSelector": {"matchLabels": {"app": "shop"}}},
                                             {"ipBlock": {"cidr": "10.1.0.0/16"}}],
                          "monitoringClients": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                                                 "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}]},
        "archive": {"enabled": True, "location": "s3://b", "s3": {"existingSecret": "s3"}},
        "auth": {k: random_secret(k) for k in ("jwtSecret", "jwtSecretPrevious", "backendToken", "adminToken")},
    })
    check_dashboard()
    check_refused("a misspelled top-level key", ["gatway.replicas=3"], ["gatway", "additional properties"])
    check_refused("a misspelled nested key", ["gateway.replica=3"], ["replica", "additional properties"])
    check_refused("a misspelled tern setting", ["settings.recipt_timeout_ms=5000"], ["recipt_timeout_ms"])
    check_refused("a setting of the wrong type", ["settings.receipt_timeout_ms=soon"], ["receipt_timeout_ms"])
    check_refused("a trace sample ratio above 1", ["tracing.sampleRatio=2"], ["sampleRatio"])
    check_refused("a shutdown delay as long as the grace period", ["shutdownDelaySeconds=30"], ["shutdownDelaySeconds", "terminationGracePeriodSeconds"])
    # Secrets and dev mode: refused by the chart, and by tern-server itself.
    check_refused("a short JWT secret", ["auth.jwtSecret=0123456789abcdef0123456789abcde"], ["jwtSecret", "32"])
    check_refused("a short back-end token", ["auth.backendToken=short"], ["backendToken", "32"])
    check_refused("a placeholder JWT secret", ["auth.jwtSecret=change-me-please-0123456789abcdef"], ["auth.jwtSecret", "change-me", "openssl rand -hex 32"])
    check_refused("a placeholder admin token", ["auth.adminToken=MySuperSecretAdminToken0123456789"], ["auth.adminToken", "secret"])
    check_refused("a placeholder previous JWT secret", ["auth.jwtSecretPrevious=an-EXAMPLE-value-0123456789abcdef0123"], ["auth.jwtSecretPrevious", "example"])
    check_refused("secrets both in values and in an existing Secret", ["auth.existingSecret=tern-auth", f"auth.backendToken={random_secret('b')}"],
                  ["auth.backendToken", "existingSecret"])
    check_refused("the previous JWT secret equal to the current one", [f"auth.jwtSecret={random_secret('j')}", f"auth.jwtSecretPrevious={random_secret('j')}"],
                  ["jwtSecretPrevious"])
    check_refused("dev mode", ["auth.devMode=true"], ["auth.devMode", "no longer supported"])
    check_refused("dev mode through settings", ["settings.dev_mode=true"], ["dev_mode", "additional properties"])
    check_refused("a secret in settings (the ConfigMap)", [f"settings.jwt_secret={random_secret('s')}"], ["jwt_secret", "additional properties"])
    check_refused("a listener in settings", ["settings.backend_listen=0.0.0.0:9000"], ["backend_listen", "additional properties"])
    check_refused("an exposed back-end Service", ["api.backendService.type=LoadBalancer"], ["backendService", "additional properties"])
    check_refused("the back-end port on the user API port", ["api.backendService.port=7402"], ["api.backendService.port", "must differ"])
    check_refused("an unknown room policy", ["settings.room_policy=closed"], ["room_policy"])
    check_refused("an API concurrency of 0", ["settings.api_concurrency=0"], ["api_concurrency"])
    check_refused("a misspelled NetworkPolicy peer", ["networkPolicy.enabled=true"], ["podSelecter", "additional properties"],
                  values={"networkPolicy": {"backendClients": [{"podSelecter": {"matchLabels": {"app": "shop"}}}]}})
    check_server_refuses("a placeholder JWT secret", lambda t: t, {"TERN_JWT_SECRET": "change-me-please-0123456789abcdef"},
                         ["jwt_secret contains \"change-me\""])
    check_server_refuses("a short back-end token", lambda t: t, {"TERN_BACKEND_TOKEN": "0123456789abcdef"},
                         ["backend_token must be at least 32 bytes"])
    check_server_refuses("no JWT secret", lambda t: t, {"TERN_JWT_SECRET": None},
                         ["jwt_secret is required"])
    check_server_refuses("dev mode on the pod's listeners", lambda t: t.replace("dev_mode = false", "dev_mode = true"), {},
                         ["dev_mode is on", "is not a loopback address"])
    check_refused("an archive without credentials", ["archive.enabled=true", "archive.location=s3://b"], ["archive.s3.existingSecret"])
    check_refused("an archive without location", ["archive.enabled=true", "archive.s3.existingSecret=s"], ["archive.location"])
    if failures:
        print(f"\n{len(failures)} chart check(s) failed", file=sys.stderr)
        sys.exit(1)
    print("\nchart checks passed")


if __name__ == "__main__":
    main()
