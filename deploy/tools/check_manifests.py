#!/usr/bin/env python3
"""Lanyard-specific checks of a rendered kustomization, beyond what the Kubernetes schemas say.

The schemas (kubernetes-validate) prove each object is well-formed; this proves the objects fit
together and keep the deployment's promises: selectors select something, references resolve,
secrets only by reference to `lanyard-secrets`, every container hardened and sized, gRPC probes on
the right health service names, no replica count fighting an HPA, the namespace applied.

Usage: check_manifests.py [--allow-untagged-images] [--require-digest] [--metrics-from=CRATES_DIR]
                          RENDERED.yaml KUSTOMIZATION_DIR
(--allow-untagged-images is for the base, whose image gets its registry and tag from an overlay;
--require-digest for production, whose image must be pinned by digest; --metrics-from names the Rust
sources whose metrics an alert may use.)
Exits 1 and prints one line per problem if any check fails.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

SECRET_NAME = "lanyard-secrets"
SECRET_KEYS = {"database-url", "migrate-database-url", "redis-url", "operator-keys", "service-keys",
               "encryption-key", "previous-encryption-keys", "smtp-url"}
# Secret keys a workload may do without (only during a key rotation): referenced with optional: true.
OPTIONAL_SECRET_KEYS = {"previous-encryption-keys"}
# Settings that carry credentials: only ever from a secretKeyRef, never a literal or a ConfigMap.
SECRET_SETTINGS = {"LANYARD_DATABASE_URL", "LANYARD_REDIS_URL", "LANYARD_OPERATOR_KEYS",
                   "LANYARD_SERVICE_KEYS", "LANYARD_ENCRYPTION_KEY", "LANYARD_PREVIOUS_ENCRYPTION_KEYS",
                   "LANYARD_SMTP_URL"}
HEALTH_NAMES = {
    "tenancy": "lanyard.tenancy.v1.TenancyService",
    "invitation": "lanyard.invitation.v1.InvitationService",
    "token": "lanyard.token.v1.TokenService",
}
GRPC_PORT = 50051
HTTP_PORT = 8080
METRICS_PORT = 9090
SPLIT_KINDS = ("ServiceAccount", "Deployment", "Service", "PodDisruptionBudget",
               "HorizontalPodAutoscaler", "NetworkPolicy")
KNOWN_KINDS = {
    "Namespace", "ConfigMap", "ServiceAccount", "Deployment", "Service", "Job",
    "PodDisruptionBudget", "HorizontalPodAutoscaler", "NetworkPolicy", "PersistentVolumeClaim",
    "ServiceMonitor", "PrometheusRule",
}
# Kinds of the Prometheus Operator: no Kubernetes schema knows them (validate.sh leaves them out
# of the schema check), so their shape is checked here.
MONITORING_KINDS = {"ServiceMonitor", "PrometheusRule"}
SEVERITIES = {"critical", "warning", "info"}
# gRPC codes as the metrics name them (canonical names), and TRANSPORT for a call that failed
# below gRPC.
GRPC_CODES = {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
              "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
              "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
              "TRANSPORT"}
# Series Prometheus itself makes for every target.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
METRIC_MACRO = re.compile(r'(?:metrics::)?(counter|gauge|histogram)!\(\s*"([a-z_:][a-z0-9_:]*)"')
CLUSTER_SCOPED = {"Namespace"}
NAME_LABEL = "app.kubernetes.io/name"
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
COMPONENT_LABEL = "app.kubernetes.io/component"


class Checker:
    def __init__(self, docs: list[dict], namespace: str | None, allow_untagged_images: bool,
                 require_digest: bool = False, exported: set[str] | None = None):
        self.docs = docs
        self.exported = exported
        self.require_digest = require_digest
        self.namespace = namespace
        self.allow_untagged_images = allow_untagged_images
        self.problems: list[str] = []

    def fail(self, obj: dict | None, message: str) -> None:
        where = f"{obj['kind']}/{obj['metadata']['name']}: " if obj else ""
        self.problems.append(where + message)

    def of_kind(self, kind: str) -> list[dict]:
        return [d for d in self.docs if d["kind"] == kind]

    def named(self, kind: str, name: str) -> dict | None:
        return next((d for d in self.of_kind(kind) if d["metadata"]["name"] == name), None)

    def pod_templates(self) -> list[tuple[dict, dict]]:
        return [(d, d["spec"]["template"]) for d in self.docs if d["kind"] in ("Deployment", "Job")]

    # -- whole render -------------------------------------------------------------------------------

    def check_all(self) -> None:
        seen = set()
        for obj in self.docs:
            meta = obj.get("metadata") or {}
            if obj.get("kind") == "Secret":
                continue  # reported below
            if obj.get("kind") not in KNOWN_KINDS:
                self.problems.append(f"unexpected kind {obj.get('kind')!r} (no schema check for it here)")
                continue
            key = (obj["kind"], meta.get("namespace"), meta["name"])
            if key in seen:
                self.fail(obj, "defined twice")
            seen.add(key)
            labels = meta.get("labels") or {}
            if labels.get(NAME_LABEL) != "lanyard":
                self.fail(obj, f"label {NAME_LABEL}=lanyard missing")
            if self.namespace and obj["kind"] not in CLUSTER_SCOPED and meta.get("namespace") != self.namespace:
                self.fail(obj, f"namespace is {meta.get('namespace')!r}, expected {self.namespace!r}")
        if self.of_kind("Secret"):
            self.fail(None, "a Secret is rendered: secrets must only be referenced, never contained")
        for config_map in self.of_kind("ConfigMap"):
            for key in sorted(SECRET_SETTINGS & set(config_map.get("data") or {})):
                self.fail(config_map, f"holds {key}, a secret setting (use lanyard-secrets)")
        for workload, template in self.pod_templates():
            self.check_pod(workload, template)
        for kind, check in [("Deployment", self.check_deployment), ("Service", self.check_service),
                            ("PodDisruptionBudget", self.check_pdb),
                            ("HorizontalPodAutoscaler", self.check_hpa),
                            ("NetworkPolicy", self.check_network_policy),
                            ("ServiceMonitor", self.check_service_monitor),
                            ("PrometheusRule", self.check_prometheus_rule)]:
            for obj in self.of_kind(kind):
                check(obj)
        if any(self.component(d) == "all-in-one" for d in self.of_kind("Deployment")):
            self.check_all_in_one_shape()
        else:
            self.check_split_shape()

    def check_split_shape(self) -> None:
        for svc in HEALTH_NAMES:
            for kind in SPLIT_KINDS:
                if not self.named(kind, f"lanyard-{svc}"):
                    self.fail(None, f"{kind} lanyard-{svc} missing")
        jobs = [j for j in self.of_kind("Job") if self.args(j["spec"]["template"])[:1] == ["migrate"]]
        if len(jobs) != 1:
            self.fail(None, f"expected one migration Job running `lanyard migrate`, found {len(jobs)}")

        # Tokens name their issuer for good, and verifiers outside the cluster fetch its JWKS.
        for config_map in self.of_kind("ConfigMap"):
            issuer = (config_map.get("data") or {}).get("LANYARD_TOKEN_ISSUER")
            if issuer is None:
                continue
            host = issuer.split("/")[2].rsplit(":", 1)[0] if "://" in issuer else ""
            loopback = host in ("localhost", "127.0.0.1", "[::1]")  # dev, through a port-forward
            in_cluster = host.split(".")[0] in {f"lanyard-{s}" for s in HEALTH_NAMES} or ".svc" in host
            if in_cluster or not (issuer.startswith("https://") or loopback):
                self.fail(config_map, f"LANYARD_TOKEN_ISSUER={issuer}: must be the public https:// URL, "
                                      f"not an in-cluster Service")

    def check_all_in_one_shape(self) -> None:
        deployments = self.of_kind("Deployment")
        if len(deployments) != 1:
            self.fail(None, f"all-in-one: expected one Deployment, found {len(deployments)}")
        for d in deployments:
            if d["spec"].get("replicas") != 1:
                self.fail(d, "all-in-one runs exactly 1 replica (SQLite)")
            if self.args(d["spec"]["template"]) != ["serve"]:
                self.fail(d, "all-in-one must run `lanyard serve` (all services)")

    # -- pods -----------------------------------------------------------------------------------------

    @staticmethod
    def component(obj: dict) -> str | None:
        return (obj["metadata"].get("labels") or {}).get(COMPONENT_LABEL)

    @staticmethod
    def args(template: dict) -> list[str]:
        return template["spec"]["containers"][0].get("args") or []

    def check_pod(self, workload: dict, template: dict) -> None:
        spec = template["spec"]
        labels = template["metadata"].get("labels") or {}
        if labels.get(NAME_LABEL) != "lanyard" or not labels.get(COMPONENT_LABEL):
            self.fail(workload, "pod template needs app.kubernetes.io/name=lanyard and a component label")
        if self.component(workload) != labels.get(COMPONENT_LABEL):
            self.fail(workload, "component label differs between the object and its pod template")
        if spec.get("enableServiceLinks") is not False:
            self.fail(workload, "enableServiceLinks must be false (service links inject LANYARD_* variables)")
        if spec.get("automountServiceAccountToken") is not False:
            self.fail(workload, "automountServiceAccountToken must be false")
        sa = spec.get("serviceAccountName")
        if not sa or not self.named("ServiceAccount", sa):
            self.fail(workload, f"serviceAccountName {sa!r} is not rendered")
        if "terminationGracePeriodSeconds" not in spec:
            self.fail(workload, "terminationGracePeriodSeconds not set")
        pod_sc = spec.get("securityContext") or {}
        if (pod_sc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            self.fail(workload, "pod seccompProfile must be RuntimeDefault")
        volumes = {v["name"] for v in spec.get("volumes") or []}
        for volume in spec.get("volumes") or []:
            claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            if claim and not self.named("PersistentVolumeClaim", claim):
                self.fail(workload, f"PersistentVolumeClaim {claim} is not rendered")
        for container in spec.get("initContainers", []) + spec["containers"]:
            self.check_container(workload, container, pod_sc, volumes)

    def check_container(self, workload: dict, c: dict, pod_sc: dict, volumes: set[str]) -> None:
        name = f"container {c['name']}"
        sc = c.get("securityContext") or {}
        if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")):
            self.fail(workload, f"{name}: runAsNonRoot must be true")
        if sc.get("readOnlyRootFilesystem") is not True:
            self.fail(workload, f"{name}: readOnlyRootFilesystem must be true")
        if sc.get("allowPrivilegeEscalation") is not False:
            self.fail(workload, f"{name}: allowPrivilegeEscalation must be false")
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            self.fail(workload, f"{name}: capabilities must drop ALL")
        if (sc.get("capabilities") or {}).get("add"):
            self.fail(workload, f"{name}: adds capabilities")
        resources = c.get("resources") or {}
        for section in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                if resource not in (resources.get(section) or {}):
                    self.fail(workload, f"{name}: resources.{section}.{resource} not set")
        image = c.get("image", "")
        last = image.rsplit("/", 1)[-1]
        if ":" not in last and "@" not in last and not self.allow_untagged_images:
            self.fail(workload, f"{name}: image {image!r} has no tag or digest (set it with `images:`)")
        if last.endswith(":latest"):
            self.fail(workload, f"{name}: image {image!r} uses :latest")
        for source in c.get("envFrom") or []:
            ref = (source.get("configMapRef") or {}).get("name")
            if ref and not self.named("ConfigMap", ref):
                self.fail(workload, f"{name}: envFrom ConfigMap {ref} is not rendered")
            if "secretRef" in source:
                self.fail(workload, f"{name}: envFrom secretRef; reference single keys with secretKeyRef")
        for env in c.get("env") or []:
            ref = (env.get("valueFrom") or {}).get("secretKeyRef")
            if ref and (ref.get("name") != SECRET_NAME or ref.get("key") not in SECRET_KEYS):
                self.fail(workload, f"{name}: env {env['name']} references secret "
                                    f"{ref.get('name')}/{ref.get('key')}, not one of {SECRET_NAME}'s keys")
            if not ref and env.get("name") in SECRET_SETTINGS:
                self.fail(workload, f"{name}: {env['name']} must come from a secretKeyRef")
        for mount in c.get("volumeMounts") or []:
            if mount["name"] not in volumes:
                self.fail(workload, f"{name}: volumeMount {mount['name']} has no volume")
        refs = {e["name"]: (e.get("valueFrom") or {}).get("secretKeyRef") or {} for e in c.get("env") or []}
        for env_name, ref in refs.items():
            if ref.get("key") in OPTIONAL_SECRET_KEYS and ref.get("optional") is not True:
                self.fail(workload, f"{name}: {env_name} must be optional: {ref['key']} exists only during a rotation")
        # Whatever opens sealed secrets must also open them during a key-encryption-key rotation.
        if "LANYARD_ENCRYPTION_KEY" in refs and (refs.get("LANYARD_PREVIOUS_ENCRYPTION_KEYS") or {}).get(
                "key") != "previous-encryption-keys":
            self.fail(workload, f"{name}: uses encryption-key without previous-encryption-keys (optional)")
        # The migration role runs DDL; the services run with a role that only reads and writes rows.
        database = refs.get("LANYARD_DATABASE_URL", {}).get("key")
        wanted = "migrate-database-url" if self.args(workload["spec"]["template"])[:1] == ["migrate"] else "database-url"
        if database and database != wanted:
            self.fail(workload, f"{name}: LANYARD_DATABASE_URL comes from {database}, expected {wanted}")
        if self.require_digest and not DIGEST.search(image):
            self.fail(workload, f"{name}: image {image!r} is not pinned by digest (@sha256:<64 hex>)")

    # -- objects --------------------------------------------------------------------------------------

    def check_deployment(self, d: dict) -> None:
        spec = d["spec"]
        selector = spec["selector"]
        template_labels = spec["template"]["metadata"].get("labels") or {}
        if not matches(selector, template_labels):
            self.fail(d, "selector does not match its own pod template")
        component = self.component(d)
        container = spec["template"]["spec"]["containers"][0]
        expected_service = HEALTH_NAMES.get(component, "")
        probes = {p: container.get(p) for p in ("startupProbe", "readinessProbe", "livenessProbe")}
        env = {e["name"]: e.get("value") for e in container.get("env") or []}
        if "LANYARD_TLS_CERT_FILE" in env:
            self.check_tls(d, component, container, env, probes)
        else:
            for probe_name, probe in probes.items():
                grpc = (probe or {}).get("grpc")
                if not grpc or grpc.get("port") != GRPC_PORT:
                    self.fail(d, f"{probe_name} must be a native gRPC probe on port {GRPC_PORT}")
            readiness = ((probes["readinessProbe"] or {}).get("grpc") or {}).get("service", "")
            if readiness != expected_service:
                self.fail(d, f"readinessProbe checks health service {readiness!r}, expected {expected_service!r}")
        ports = {p["containerPort"] for p in container.get("ports") or []}
        wanted = {GRPC_PORT, METRICS_PORT} | ({HTTP_PORT} if component in ("token", "all-in-one") else set())
        if not wanted <= ports:
            self.fail(d, f"container ports {sorted(ports)} lack {sorted(wanted - ports)}")
        if component in HEALTH_NAMES:
            if self.args(spec["template"]) != ["serve", "--service", component]:
                self.fail(d, f"must run `lanyard serve --service {component}`")
            hpa = self.named("HorizontalPodAutoscaler", d["metadata"]["name"])
            if hpa and "replicas" in spec:
                self.fail(d, "sets replicas although an HPA scales it (every apply would reset it)")

    def check_tls(self, d: dict, component: str | None, container: dict, env: dict, probes: dict) -> None:
        """A TLS pod: its certificate on a Secret volume, https:// to its peers, probes over TLS."""
        if "LANYARD_TLS_KEY_FILE" not in env:
            self.fail(d, "LANYARD_TLS_CERT_FILE without LANYARD_TLS_KEY_FILE")
        secret_volumes = {v["name"] for v in d["spec"]["template"]["spec"].get("volumes") or [] if "secret" in v}
        for setting in ("LANYARD_TLS_CERT_FILE", "LANYARD_TLS_KEY_FILE", "LANYARD_TLS_CA_FILE"):
            path = env.get(setting)
            if path is None:
                continue
            mount = next((m for m in container.get("volumeMounts") or []
                          if path.startswith(m["mountPath"].rstrip("/") + "/")), None)
            if mount is None or mount["name"] not in secret_volumes:
                self.fail(d, f"{setting}={path} is not on a Secret volume")
            elif "subPath" in mount:
                self.fail(d, f"{setting}: a subPath mount never sees a renewed certificate")
        # A process with TLS calls its peers with TLS too: no cleartext hop inside a TLS deployment.
        for name, value in env.items():
            if name.startswith("LANYARD_") and name.endswith("_URL") and value and not value.startswith("https://"):
                self.fail(d, f"{name}={value}: TLS is on, peers must be called with https://")
        for probe_name, probe in probes.items():
            command = ((probe or {}).get("exec") or {}).get("command") or []
            want_service = probe_name != "livenessProbe"
            ok = (command[:2] == ["/usr/local/bin/lanyard", "health"]
                  and option(command, "--endpoint") == f"https://127.0.0.1:{GRPC_PORT}"
                  and option(command, "--tls-server-name") == f"lanyard-{component}"
                  and option(command, "--service") == (component if want_service else None))
            if not ok:
                self.fail(d, f"{probe_name}: with TLS, must exec `/usr/local/bin/lanyard health"
                             f"{' --service ' + str(component) if want_service else ''} --endpoint "
                             f"https://127.0.0.1:{GRPC_PORT} --tls-server-name lanyard-{component}` "
                             f"(native gRPC probes speak plaintext only)")

    def check_service(self, s: dict) -> None:
        selector = {"matchLabels": s["spec"].get("selector") or {}}
        if not selector["matchLabels"] or not self.select_pods(selector):
            self.fail(s, "selector matches no pod template")
        ports = {p["port"]: p for p in s["spec"]["ports"]}
        grpc = ports.get(GRPC_PORT)
        if not grpc or grpc.get("appProtocol") != "grpc" or grpc.get("name") != "grpc":
            self.fail(s, f"needs port {GRPC_PORT} named grpc with appProtocol grpc")
        if self.component(s) in ("token", "all-in-one") and HTTP_PORT not in ports:
            self.fail(s, f"the token service also serves HTTP JWKS on {HTTP_PORT}")

    def check_pdb(self, pdb: dict) -> None:
        if ("minAvailable" in pdb["spec"]) == ("maxUnavailable" in pdb["spec"]):
            self.fail(pdb, "set exactly one of minAvailable and maxUnavailable")
        if not self.select_pods(pdb["spec"]["selector"], kinds=("Deployment",)):
            self.fail(pdb, "selector matches no Deployment's pods")

    def check_hpa(self, hpa: dict) -> None:
        target = hpa["spec"]["scaleTargetRef"]
        if target.get("kind") != "Deployment" or not self.named("Deployment", target.get("name")):
            self.fail(hpa, f"scaleTargetRef {target} is not a rendered Deployment")
        if hpa["spec"].get("minReplicas", 1) > hpa["spec"]["maxReplicas"]:
            self.fail(hpa, "minReplicas > maxReplicas")

    def check_network_policy(self, np: dict) -> None:
        if not self.select_pods(np["spec"]["podSelector"]):
            self.fail(np, "podSelector matches no pod template")
        for rule in np["spec"].get("ingress") or []:
            for peer in rule.get("from") or []:
                # A same-namespace pod selector names Lanyard components: each must exist.
                if "podSelector" in peer and "namespaceSelector" not in peer:
                    for component in components_selected(peer["podSelector"]):
                        if not self.select_pods({"matchLabels": {NAME_LABEL: "lanyard",
                                                                  COMPONENT_LABEL: component}}):
                            self.fail(np, f"allows component {component!r}, which has no pods")

    def check_service_monitor(self, sm: dict) -> None:
        selector = sm["spec"].get("selector") or {}
        services = [s for s in self.of_kind("Service") if matches(selector, s["metadata"].get("labels") or {})]
        if not services:
            self.fail(sm, "selector matches no rendered Service")
        for endpoint in sm["spec"].get("endpoints") or []:
            for s in services:
                ports = {p.get("name") for p in s["spec"]["ports"]}
                if endpoint.get("port") not in ports:
                    self.fail(sm, f"port {endpoint.get('port')!r} is no named port of Service {s['metadata']['name']}")
                pods = self.select_pods({"matchLabels": s["spec"].get("selector") or {}}, kinds=("Deployment",))
                for d in pods:
                    container = d["spec"]["template"]["spec"]["containers"][0]
                    if not any(e["name"] == "LANYARD_TLS_CERT_FILE" for e in container.get("env") or []):
                        continue
                    secret = ((endpoint.get("tlsConfig") or {}).get("ca") or {}).get("secret") or {}
                    volumes = {(v.get("secret") or {}).get("secretName") for v in
                               d["spec"]["template"]["spec"].get("volumes") or []}
                    if endpoint.get("scheme") != "https" or secret.get("name") not in volumes:
                        self.fail(sm, f"{d['metadata']['name']} serves metrics over TLS: scheme https with "
                                      f"tlsConfig.ca from its TLS Secret")

    def check_prometheus_rule(self, rule_set: dict) -> None:
        for group in rule_set["spec"].get("groups") or []:
            for rule in group.get("rules") or []:
                name = rule.get("alert") or rule.get("record")
                expr = str(rule.get("expr", ""))
                if not name or not expr:
                    self.fail(rule_set, f"group {group.get('name')}: a rule without alert/record or expr")
                    continue
                if "alert" in rule:
                    if (rule.get("labels") or {}).get("severity") not in SEVERITIES:
                        self.fail(rule_set, f"{name}: labels.severity must be one of {sorted(SEVERITIES)}")
                    if not (rule.get("annotations") or {}).get("summary"):
                        self.fail(rule_set, f"{name}: annotations.summary missing")
                if self.exported is not None:
                    for metric in re.findall(r"\b(lanyard_[a-z0-9_]+)", expr):
                        if metric not in self.exported:
                            self.fail(rule_set, f"{name}: {metric} is not a metric the code exports")
                    for metric in re.findall(r"\b([a-z_]+)\{", expr):
                        if not metric.startswith("lanyard_") and metric not in PROMETHEUS_SERIES:
                            self.fail(rule_set, f"{name}: {metric} is neither Lanyard's nor Prometheus's")
                for codes in re.findall(r'code=~?"([^"]*)"', expr):
                    for code in codes.split("|"):
                        if code not in GRPC_CODES:
                            self.fail(rule_set, f"{name}: code {code!r} is not a label value the metrics use")

    def select_pods(self, selector: dict, kinds=("Deployment", "Job")) -> list[dict]:
        return [w for w, t in self.pod_templates()
                if w["kind"] in kinds and matches(selector, t["metadata"].get("labels") or {})]


def exported_metrics(sources: Path) -> set[str]:
    """Every metric name the Rust sources record, with a histogram's series suffixes."""
    names = set(PROMETHEUS_SERIES)
    for path in sources.rglob("*.rs"):
        for kind, name in METRIC_MACRO.findall(path.read_text(encoding="utf-8")):
            names.add(name)
            if kind == "histogram":
                names.update(f"{name}_{suffix}" for suffix in ("bucket", "sum", "count"))
    return names


def option(command: list[str], flag: str) -> str | None:
    """The value after `flag` in an argument list, or None."""
    return command[command.index(flag) + 1] if flag in command[:-1] else None


def matches(selector: dict, labels: dict) -> bool:
    if not selector:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def components_selected(selector: dict) -> list[str]:
    found = []
    if COMPONENT_LABEL in (selector.get("matchLabels") or {}):
        found.append(selector["matchLabels"][COMPONENT_LABEL])
    for expr in selector.get("matchExpressions") or []:
        if expr["key"] == COMPONENT_LABEL and expr["operator"] == "In":
            found.extend(expr["values"])
    return found


def main() -> int:
    args = sys.argv[1:]
    allow_untagged_images = "--allow-untagged-images" in args
    require_digest = "--require-digest" in args
    sources = next((a.split("=", 1)[1] for a in args if a.startswith("--metrics-from=")), None)
    args = [a for a in args if a not in ("--allow-untagged-images", "--require-digest")
            and not a.startswith("--metrics-from=")]
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    rendered, kustomization_dir = Path(args[0]), Path(args[1])
    docs = [d for d in yaml.safe_load_all(rendered.read_text()) if d]
    kustomization = yaml.safe_load((kustomization_dir / "kustomization.yaml").read_text())
    exported = exported_metrics(Path(sources)) if sources else None
    if exported is not None and len(exported) <= len(PROMETHEUS_SERIES):
        print(f"ERROR: no metric found in the sources under {sources}")
        return 1
    checker = Checker(docs, kustomization.get("namespace"), allow_untagged_images, require_digest, exported)
    try:
        checker.check_all()
    except (KeyError, TypeError, IndexError) as error:  # malformed beyond what the schemas catch
        checker.problems.append(f"could not check: {type(error).__name__}: {error}")
    for problem in checker.problems:
        print(f"ERROR {rendered.name}: {problem}")
    print(f"{rendered.name}: {len(docs)} objects, {len(checker.problems)} problems")
    return 1 if checker.problems else 0


if __name__ == "__main__":
    sys.exit(main())
