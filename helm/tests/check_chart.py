"""Checks the tern Helm chart offline, as an operator would meet it.

For the default values and every file in helm/tern/examples/:
  - `helm lint --strict` passes;
  - `helm template` renders, and every object validates strictly against the
    Kubernetes API schemas (kubernetes-validate) of the oldest and newest
    versions the chart supports;
  - the rendered objects are what a deployment needs: a StatefulSet of
    gateways named by pod, probes and resources on every container, a PDB
    per multi-pod workload, the Services clients and the API need;
  - the config file the pods read is accepted by the real `tern-server`
    (`--check-config`), with each container's own environment.
And values a user gets wrong are refused with a message naming the mistake.

Run by helm/test.sh (which installs helm and kubernetes-validate); needs
PyYAML (kubernetes-validate brings it) and the tern-server binary.
"""

import base64
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


def env_of(container, secrets):
    """The container's environment, secret references resolved from the
    rendered Secret (or a stand-in for an existing one)."""
    env = {}
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        elif "secretKeyRef" in e.get("valueFrom", {}):
            ref = e["valueFrom"]["secretKeyRef"]
            env[e["name"]] = secrets.get((ref["name"], ref["key"]), "existing-secret-0123456789abcdef")
        elif "fieldRef" in e.get("valueFrom", {}):
            env[e["name"]] = "pod-name-0"
    return env


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
        # The real binary accepts the config file with this container's environment.
        with tempfile.TemporaryDirectory() as d:
            Path(d, "tern.toml").write_text(toml)
            env = env_of(c, secrets)
            env["TERN_CONFIG"] = str(Path(d, "tern.toml"))
            env["TERN_DATA_DIR"] = d
            r = run([TERN_SERVER, "--check-config"], env={"PATH": os.environ["PATH"], **env})
            check(r.returncode == 0, f"{name}: tern-server refuses the {component} pod's settings:\n{r.stdout}{r.stderr}")
            service = "ingest" if component == "api" else component
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


def check_refused(what, sets, words):
    print(f"refused: {what}")
    r = helm_template(sets=sets)
    check(r.returncode != 0, f"{what}: helm template accepted it")
    for w in words:
        check(w in r.stderr, f"{what}: the error does not mention {w!r}:\n{r.stderr}")


def main():
    check_rendering("default values", None)
    examples = sorted((CHART / "examples").glob("*.yaml"))
    check(len(examples) >= 2, "fewer than two example values files")
    for f in examples:
        check_rendering(f"examples/{f.name}", f)
    check_dashboard()
    check_refused("a misspelled top-level key", ["gatway.replicas=3"], ["gatway", "additional properties"])
    check_refused("a misspelled nested key", ["gateway.replica=3"], ["replica", "additional properties"])
    check_refused("a misspelled tern setting", ["settings.recipt_timeout_ms=5000"], ["recipt_timeout_ms"])
    check_refused("a setting of the wrong type", ["settings.receipt_timeout_ms=soon"], ["receipt_timeout_ms"])
    check_refused("a trace sample ratio above 1", ["tracing.sampleRatio=2"], ["sampleRatio"])
    check_refused("a shutdown delay as long as the grace period", ["shutdownDelaySeconds=30"], ["shutdownDelaySeconds", "terminationGracePeriodSeconds"])
    check_refused("a short JWT secret", ["auth.jwtSecret=short"], ["jwtSecret"])
    check_refused("an archive without credentials", ["archive.enabled=true", "archive.location=s3://b"], ["archive.s3.existingSecret"])
    check_refused("an archive without location", ["archive.enabled=true", "archive.s3.existingSecret=s"], ["archive.location"])
    if failures:
        print(f"\n{len(failures)} chart check(s) failed", file=sys.stderr)
        sys.exit(1)
    print("\nchart checks passed")


if __name__ == "__main__":
    main()
