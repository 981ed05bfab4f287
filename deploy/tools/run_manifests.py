#!/usr/bin/env python3
"""Start what a rendered overlay runs, on this machine, exactly as the manifests configure it.

    run_manifests.py --rendered OUT.yaml --binary target/debug/lanyard --values VALUES.yaml \
        --overlay production --dockerfile deploy/Dockerfile --proto-dir proto

For every container that runs the Lanyard image (init containers, then Jobs, then Deployments),
the binary is started with the image's ENV (from the Dockerfile), then the container's `envFrom`
and `env` (ConfigMaps from the render, Secrets from the values file, `secretKeyRef`,
`configMapKeyRef`, `fieldRef`, `$(VAR)` expansion), and its `args`. Volumes become directories of a
temporary tree (ConfigMap and Secret volumes are written out) and every path under a mount point
is rewritten there. Each container port gets its own loopback port; a Service name in a value
(`http://lanyard-tenancy:50051`) becomes the loopback address of the pod port behind that Service
port. A Job must exit 0; a Deployment must pass its startup, readiness and liveness probes, and
every port it declares must accept connections. Then story.py runs a short story through the
Services' addresses.

Fails (exit 1) on anything a cluster would trip on: a Secret or ConfigMap key that is missing, an
address whose port is neither a container port nor a Service port, a Service whose targetPort no
container declares, a path that is on no volume (the root filesystem is read-only), a setting the
binary refuses, a process that exits or never becomes ready.
"""

import argparse
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

import yaml

import story
import tls_front

IMAGE_NAME = "lanyard"
WILDCARD_ADDR = re.compile(r"^(0\.0\.0\.0|\[::\]|::):(\d+)$")
HOST_PORT = re.compile(r"(?P<host>[a-z0-9][a-z0-9.-]*):(?P<port>\d+)")
VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
# A path inside a value, as in `?sslmode=verify-full&sslrootcert=/etc/lanyard/pg/ca.crt`.
EMBEDDED_PATH = re.compile(r"(?<==)(/[^&\s]*)")
POD_LOCAL = re.compile(r"\b(127\.0\.0\.1|localhost):(\d+)\b")


class Failure(Exception):
    """Something the manifests would trip on in a cluster."""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def image_env(dockerfile):
    """The ENV of the Dockerfile's last stage: what the container starts with."""
    text = open(dockerfile, encoding="utf-8").read().replace("\\\n", " ")
    last = text.split("\nFROM ")[-1]
    env = {}
    for line in last.splitlines():
        if line.startswith("ENV "):
            for pair in line[4:].split():
                key, _, value = pair.partition("=")
                env[key] = value
    workdir = [line.split(None, 1)[1].strip() for line in last.splitlines() if line.startswith("WORKDIR ")]
    return env, (workdir[-1] if workdir else "/")


def runs_lanyard(container):
    image = container.get("image", "")
    repo = image.split("@")[0].rsplit(":", 1)[0] if ":" in image.split("/")[-1] else image.split("@")[0]
    return repo.split("/")[-1] == IMAGE_NAME


class Cluster:
    """The rendered objects, the test values and the loopback ports standing in for the network."""

    def __init__(self, docs, values, namespace_default):
        self.docs = docs
        self.config_maps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
        self.secrets = values.get("secrets", {})
        self.services = [d for d in docs if d["kind"] == "Service"]
        self.namespace = next((d["metadata"].get("namespace") for d in docs if d["metadata"].get("namespace")),
                              namespace_default)
        # (workload, container port number) -> loopback port
        self.pod_ports = {}

    def workloads(self, kind):
        return [d for d in self.docs if d["kind"] == kind]

    def pod_port(self, workload, port):
        key = (workload, int(port))
        if key not in self.pod_ports:
            self.pod_ports[key] = free_port()
        return self.pod_ports[key]

    def backing(self, service):
        """The workload and container ports a Service selects."""
        selector = service["spec"].get("selector", {})
        for d in self.workloads("Deployment"):
            labels = d["spec"]["template"]["metadata"].get("labels", {})
            if selector and all(labels.get(k) == v for k, v in selector.items()):
                ports = [p for c in d["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])]
                return d["metadata"]["name"], ports
        raise Failure(f"Service {service['metadata']['name']} selects no Deployment")

    def service_address(self, name, port):
        """The loopback address behind `name:port` (a Service's DNS name), or None if `name` is none."""
        short = name.split(".")[0]
        rest = name.split(".")[1:]
        if rest and rest[0] != self.namespace:
            return None
        service = next((s for s in self.services if s["metadata"]["name"] == short), None)
        if service is None:
            return None
        for p in service["spec"]["ports"]:
            if int(p["port"]) == int(port):
                workload, ports = self.backing(service)
                target = p.get("targetPort", p["port"])
                match = [c for c in ports if c.get("name") == target or c["containerPort"] == target]
                if not match:
                    raise Failure(f"Service {short} port {port}: targetPort {target!r} is no container port of {workload}")
                return f"127.0.0.1:{self.pod_port(workload, match[0]['containerPort'])}"
        raise Failure(f"{name}:{port}: Service {short} has no port {port}")

    def secret_value(self, ref, what):
        data = self.secrets.get(ref["name"])
        if data is None or ref["key"] not in data:
            if ref.get("optional"):
                return None
            raise Failure(f"{what}: Secret {ref['name']} has no key {ref['key']!r} in the test values")
        return str(data[ref["key"]])

    def config_value(self, ref, what):
        data = self.config_maps.get(ref["name"])
        if data is None or ref["key"] not in data:
            if ref.get("optional"):
                return None
            raise Failure(f"{what}: ConfigMap {ref['name']} has no key {ref['key']!r}")
        return data[ref["key"]]


class Pod:
    """One pod of a workload: its volumes on disk and the environment of each container."""

    def __init__(self, cluster, workload, root, substitutions):
        self.cluster = cluster
        self.workload = workload
        self.name = workload["metadata"]["name"]
        self.spec = workload["spec"]["template"]["spec"]
        self.pod_name = f"{self.name}-{secrets.token_hex(4)}"
        self.root = root
        self.substitutions = substitutions
        self.volumes = {}
        for v in self.spec.get("volumes", []):
            path = os.path.join(root, "volumes", v["name"])
            os.makedirs(path, mode=0o700, exist_ok=True)
            self.volumes[v["name"]] = path
            source = v.get("configMap") or v.get("secret")
            if source is not None:
                name = source.get("name") or source.get("secretName")
                data = (cluster.config_maps.get(name) if "configMap" in v else cluster.secrets.get(name))
                if data is None:
                    if source.get("optional"):
                        continue
                    raise Failure(f"{self.name}: volume {v['name']} names {name}, which does not exist")
                items = source.get("items") or [{"key": k, "path": k} for k in data]
                for item in items:
                    if item["key"] not in data:
                        raise Failure(f"{self.name}: volume {v['name']}: {name} has no key {item['key']!r}")
                    with open(os.path.join(path, item["path"]), "w", encoding="utf-8") as f:
                        f.write(self.substitute(str(data[item["key"]])))

    def substitute(self, value):
        for key, replacement in self.substitutions.items():
            value = value.replace("{" + key + "}", replacement)
        return value

    def mounts(self, container):
        return sorted(((m["mountPath"], self.volumes[m["name"]]) for m in container.get("volumeMounts", [])),
                      key=lambda m: -len(m[0]))

    def rewrite(self, value, container, what):
        """A value as the process here must see it: addresses and paths moved to this machine."""
        m = WILDCARD_ADDR.match(value)
        if m:
            # An undeclared port (the shared ConfigMap's LANYARD_HTTP_ADDR in a pod that serves no
            # HTTP) still gets a port of its own, so that the pods here do not collide; nothing
            # routes to it, since Services and probes must name declared ports.
            port = int(m.group(2))
            return f"127.0.0.1:{self.cluster.pod_port(self.name, port)}"
        if value.startswith("/"):
            return self.local_path(value, container, what)

        def service(match):
            address = self.cluster.service_address(match.group("host"), match.group("port"))
            return address or match.group(0)

        value = HOST_PORT.sub(service, value)
        return EMBEDDED_PATH.sub(lambda m: self.local_path(m.group(1), container, what), value)

    def local_path(self, value, container, what):
        for mount_path, local in self.mounts(container):
            if value == mount_path or value.startswith(mount_path.rstrip("/") + "/"):
                return local + value[len(mount_path.rstrip("/")):]
        raise Failure(f"{self.name}/{container['name']}: {what}={value} is on no volume (read-only root filesystem)")

    def rewrite_local(self, value):
        """An address of the pod itself (`127.0.0.1:50051` in a probe) as the port here."""
        ports = {int(p) for (w, p) in self.cluster.pod_ports if w == self.name}
        return POD_LOCAL.sub(lambda m: f"127.0.0.1:{self.cluster.pod_port(self.name, m.group(2))}"
                             if int(m.group(2)) in ports else m.group(0), value)

    def environment(self, container, base):
        env = dict(base)
        what = f"{self.name}/{container['name']}"
        for source in container.get("envFrom", []):
            prefix = source.get("prefix", "")
            if "configMapRef" in source:
                ref = source["configMapRef"]
                data = self.cluster.config_maps.get(ref["name"])
            else:
                ref = source["secretRef"]
                data = self.cluster.secrets.get(ref["name"])
            if data is None:
                if ref.get("optional"):
                    continue
                raise Failure(f"{what}: envFrom names {ref['name']}, which does not exist")
            for k, v in data.items():
                env[prefix + k] = str(v)
        for e in container.get("env", []):
            name = e["name"]
            if "value" in e:
                value = VAR_REF.sub(lambda m: env.get(m.group(1), m.group(0)), str(e["value"]))
            else:
                source = e["valueFrom"]
                if "secretKeyRef" in source:
                    value = self.cluster.secret_value(source["secretKeyRef"], f"{what} {name}")
                elif "configMapKeyRef" in source:
                    value = self.cluster.config_value(source["configMapKeyRef"], f"{what} {name}")
                elif "fieldRef" in source:
                    field = source["fieldRef"]["fieldPath"]
                    value = {"metadata.name": self.pod_name, "metadata.namespace": self.cluster.namespace}.get(field)
                    if value is None:
                        raise Failure(f"{what} {name}: fieldRef {field} is not simulated here")
                else:
                    raise Failure(f"{what} {name}: unsupported valueFrom {sorted(source)}")
                if value is None:
                    continue
            env[name] = value
        return {k: self.rewrite(self.substitute(v), container, k) for k, v in env.items()}

    def start(self, container, base_env, workdir):
        if container.get("command") not in (None, [IMAGE_NAME]):
            raise Failure(f"{self.name}/{container['name']}: command {container['command']} replaces the entrypoint")
        env = self.environment(container, base_env)
        args = [self.rewrite(self.substitute(a), container, "args") for a in container.get("args", ["serve"])]
        cwd = self.rewrite(workdir, container, "WORKDIR") if workdir != "/" else self.root
        log_path = os.path.join(self.root, f"{container['name']}.log")
        log = open(log_path, "wb")
        print(f"==> {self.name}/{container['name']}: lanyard {' '.join(args)}  ({len(env)} variables; log {log_path})")
        process = subprocess.Popen([BINARY] + args, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        return Process(f"{self.name}/{container['name']}", process, log_path, env, cwd)


class Process:
    def __init__(self, name, popen, log_path, env, cwd):
        self.name, self.popen, self.log_path = name, popen, log_path
        # What an `exec` probe runs with: the container's environment and working directory.
        self.env, self.cwd = env, cwd

    def tail(self, lines=25):
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-lines:])

    def stop(self):
        """SIGTERM, as the kubelet sends it; the exit code, or None if it had already exited."""
        if self.popen.poll() is not None:
            return None
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        return self.popen.returncode


BINARY = None


def run_to_completion(process, deadline_seconds):
    try:
        code = process.popen.wait(timeout=deadline_seconds)
    except subprocess.TimeoutExpired:
        process.stop()
        raise Failure(f"{process.name} did not finish within {deadline_seconds}s:\n{process.tail()}")
    if code != 0:
        raise Failure(f"{process.name} exited {code}:\n{process.tail()}")
    print(f"    {process.name}: exited 0")


def probe(pod, container, probe_spec, kind, process):
    """Polls one probe until it passes, as the kubelet would (bounded by its own thresholds)."""
    period = probe_spec.get("periodSeconds", 10)
    attempts = max(probe_spec.get("failureThreshold", 3), 1)
    budget = min(period * attempts, 120) if kind == "startup" else 60
    ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    deadline = time.monotonic() + budget
    last = None
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            raise Failure(f"{process.name} exited {process.popen.returncode} before its {kind} probe passed:\n"
                          f"{process.tail()}")
        if "grpc" in probe_spec:
            port = probe_spec["grpc"]["port"]
            address = f"127.0.0.1:{pod.cluster.pod_port(pod.name, port)}"
            ok, last = story.health(address, probe_spec["grpc"].get("service", ""))
            if last == "NOT_FOUND":
                # The process does not know that service name: it never will.
                raise Failure(f"{process.name}: {kind} probe asks for {probe_spec['grpc'].get('service')!r}, "
                              f"which the process does not report (NOT_FOUND)")
        elif "exec" in probe_spec:
            ok, last = exec_probe(pod, container, probe_spec, process)
            if any(s in last for s in ("NotFound", "NOT_FOUND", "SERVICE_UNKNOWN", "service not registered")):
                raise Failure(f"{process.name}: {kind} probe asks about a service the process does not "
                              f"report: {last}")
        elif "tcpSocket" in probe_spec:
            port = probe_spec["tcpSocket"]["port"]
            port = ports.get(port, port)
            ok = listening(pod.cluster.pod_port(pod.name, port))
        else:
            raise Failure(f"{process.name}: {kind} probe kind {sorted(probe_spec)} is not simulated here")
        if ok:
            print(f"    {process.name}: {kind} probe passed")
            return
        time.sleep(0.5)
    raise Failure(f"{process.name}: {kind} probe did not pass within {budget}s ({last}):\n{process.tail()}")


def exec_probe(pod, container, probe_spec, process):
    """Runs an `exec` probe's command as the kubelet would, in the container: the image's own
    binary, the container's environment, addresses of the pod itself moved to its ports here."""
    command = probe_spec["exec"]["command"]
    if command[0] not in (IMAGE_NAME, f"/usr/local/bin/{IMAGE_NAME}"):
        raise Failure(f"{process.name}: exec probe runs {command[0]!r}, which the image does not have")
    args = [pod.rewrite_local(pod.rewrite(a, container, "exec probe")) for a in command[1:]]
    try:
        result = subprocess.run([BINARY] + args, env=process.env, cwd=process.cwd, capture_output=True,
                                timeout=probe_spec.get("timeoutSeconds", 1) + 5)
    except subprocess.TimeoutExpired:
        return False, "timed out"
    output = (result.stdout + result.stderr).decode("utf-8", "replace").strip().replace("\n", " ")
    return result.returncode == 0, output[-300:]


def listening(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def find(docs, kind, name):
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def container_env(docs, deployment):
    return find(docs, "Deployment", deployment)["spec"]["template"]["spec"]["containers"][0]["env"]


# Breakages the run must catch (`--break NAME`, for deploy/run-manifests.sh --self-check): each
# changes the render or the values as a mistaken edit would, and the run must fail.
BREAKAGES = {
    "missing-secret-key": lambda docs, values: values["secrets"]["lanyard-secrets"].pop("smtp-url"),
    "wrong-target-port": lambda docs, values: find(docs, "Service", "lanyard-tenancy")["spec"]["ports"][0].update(
        targetPort=50052),
    "wrong-service-port": lambda docs, values: next(
        e for e in container_env(docs, "lanyard-token") if e["name"] == "LANYARD_TENANCY_URL").update(
        value="http://lanyard-tenancy:50052"),
    "dead-setting": lambda docs, values: container_env(docs, "lanyard-tenancy").append(
        {"name": "LANYARD_TOKEN_ENDPOINT", "value": "http://lanyard-token:50051"}),
    "probe-on-wrong-service": lambda docs, values: wrong_probe_service(
        find(docs, "Deployment", "lanyard-token")["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]),
    # TLS: a peer called in cleartext, and a TLS Secret without its key.
    "cleartext-peer": lambda docs, values: next(
        e for e in container_env(docs, "lanyard-invitation") if e["name"] == "LANYARD_TENANCY_URL").update(
        value="http://lanyard-tenancy:50051"),
    "tls-secret-without-key": lambda docs, values: values["tls_secrets"].update(
        {"lanyard-token-tls": {"drop": "tls.key", "names": values["tls_secrets"]["lanyard-token-tls"]}}),
}


def wrong_probe_service(probe_spec):
    if "grpc" in probe_spec:
        probe_spec["grpc"]["service"] = "lanyard.tenancy.v1.TenancyService"
    else:
        command = probe_spec["exec"]["command"]
        command[command.index("--service") + 1] = "tenancy"


def main():
    global BINARY
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rendered", required=True)
    parser.add_argument("--binary", required=True)
    parser.add_argument("--values", required=True)
    parser.add_argument("--overlay", required=True)
    parser.add_argument("--dockerfile", required=True)
    parser.add_argument("--proto-dir", required=True)
    parser.add_argument("--database-admin-url", default="postgres://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--keep", action="store_true", help="keep the temporary tree and logs")
    parser.add_argument("--break", dest="breakage", choices=sorted(BREAKAGES),
                        help="break the render or the values first (the run must then fail)")
    opts = parser.parse_args()
    BINARY = os.path.abspath(opts.binary)
    docs = [d for d in yaml.safe_load_all(open(opts.rendered, encoding="utf-8")) if d]
    values = (yaml.safe_load(open(opts.values, encoding="utf-8")) or {}).get(opts.overlay)
    if values is None:
        raise SystemExit(f"FAIL: {opts.values} has no section {opts.overlay!r}")
    if opts.breakage:
        BREAKAGES[opts.breakage](docs, values)
        print(f"==> broken on purpose: {opts.breakage}")
    base_env, workdir = image_env(opts.dockerfile)
    root = tempfile.mkdtemp(prefix=f"lanyard-{opts.overlay}-")
    run_id = uuid.uuid4().hex[:12]
    database = f"lanyard_manifests_{run_id}"
    roles = {"migrate_role": f"lanyard_migrate_{run_id}", "app_role": f"lanyard_app_{run_id}"}
    smtp = story.SmtpSink()
    substitutions = {"database": database, "smtp": smtp.address, **roles}
    tls_ca = None
    fronts = []
    if values.get("tls_secrets") or values.get("ca_secrets"):
        pki = tls_front.TestPki(os.path.join(root, "pki"))
        tls_ca = os.path.join(root, "pki", "ca.crt")
        for name, spec in (values.get("tls_secrets") or {}).items():
            names = spec["names"] if isinstance(spec, dict) else spec
            data = pki.secret(name, names)
            if isinstance(spec, dict):
                data.pop(spec["drop"])
            values.setdefault("secrets", {})[name] = data
        for name in values.get("ca_secrets") or []:
            values.setdefault("secrets", {})[name] = {"ca.crt": pki.ca_pem}
        fronts = [tls_front.TlsFront(pki.server_context("postgres"), ("127.0.0.1", 5432), postgres=True),
                  tls_front.TlsFront(pki.server_context("redis"), ("127.0.0.1", 6379))]
        substitutions.update(postgres_tls=fronts[0].address, redis_tls=fronts[1].address)
        print(f"==> test CA {tls_ca}; TLS fronts: Postgres {fronts[0].address}, Redis {fronts[1].address}")
    cluster = Cluster(docs, values, "default")
    processes = []
    created = False
    failed = False
    try:
        if values.get("postgres"):
            story.create_database(opts.database_admin_url, database, **roles)
            created = True
        # Every Service must route to a declared port, whether or not the story uses it.
        for s in cluster.services:
            for p in s["spec"]["ports"]:
                cluster.service_address(s["metadata"]["name"], p["port"])
        for kind in ("Job", "Deployment"):
            for workload in cluster.workloads(kind):
                spec = workload["spec"]["template"]["spec"]
                containers = [c for c in spec.get("initContainers", []) + spec["containers"] if runs_lanyard(c)]
                if not containers:
                    continue
                pod = Pod(cluster, workload, os.path.join(root, workload["metadata"]["name"]), substitutions)
                for c in spec.get("initContainers", []):
                    if runs_lanyard(c):
                        run_to_completion(pod.start(c, base_env, workdir), 300)
                for c in spec["containers"]:
                    if not runs_lanyard(c):
                        continue
                    process = pod.start(c, base_env, workdir)
                    if kind == "Job":
                        run_to_completion(process, min(workload["spec"].get("activeDeadlineSeconds", 300), 300))
                        continue
                    processes.append(process)
                    for probe_kind in ("startup", "readiness", "liveness"):
                        if f"{probe_kind}Probe" in c:
                            probe(pod, c, c[f"{probe_kind}Probe"], probe_kind, process)
                    for p in c.get("ports", []):
                        if not listening(cluster.pod_port(pod.name, p["containerPort"])):
                            raise Failure(f"{process.name}: declares port {p['containerPort']} ({p.get('name')}) "
                                          f"but nothing listens there")
                    print(f"    {process.name}: ready; ports "
                          + ", ".join(f"{p.get('name')} {p['containerPort']}->"
                                      f"{cluster.pod_port(pod.name, p['containerPort'])}" for p in c.get("ports", [])))
        endpoints = {f"{s['metadata']['name']}:{p['port']}": cluster.service_address(s["metadata"]["name"], p["port"])
                     for s in cluster.services for p in s["spec"]["ports"]}
        api_key = values.get("api_key")
        if api_key is None:
            # The embedded default generates its operator key in the data directory.
            key_files = [os.path.join(dirpath, "operator.key") for dirpath, _, files in os.walk(root)
                         if "operator.key" in files]
            if not key_files:
                raise Failure("no operator key: neither in the test values nor generated in a data directory")
            api_key = open(key_files[0], encoding="utf-8").read().strip()
        story.run(opts.proto_dir, os.path.join(root, "stubs"), endpoints, api_key,
                  lambda: smtp.messages + eml_files(root), processes, tls_ca)
        for front, what in zip(fronts, ("Postgres", "Redis")):
            if front.handshakes == 0:
                raise Failure(f"nothing connected to {what} through its TLS front")
            print(f"    {what}: {front.handshakes} connection(s) over TLS")
    except (Failure, story.StoryFailure, story.grpc.RpcError) as e:
        if isinstance(e, story.grpc.RpcError):
            e = f"a call of the story failed: {e.code().name}: {e.details()}"
        print(f"FAIL: {opts.overlay}: {e}", file=sys.stderr)
        for p in processes:
            print(f"--- {p.name} (last lines)\n{p.tail()}", file=sys.stderr)
        failed = True
    finally:
        codes = {p.name: p.stop() for p in processes}
        smtp.close()
        for front in fronts:
            front.close()
        if created:
            story.drop_database(opts.database_admin_url, database, **roles)
        if opts.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    bad = {n: c for n, c in codes.items() if c not in (0, None)}
    if bad:
        print(f"FAIL: {opts.overlay}: not stopped cleanly by SIGTERM (exit codes): {bad}", file=sys.stderr)
        failed = True
    if failed:
        return 1
    print(f"OK: {opts.overlay}: {len(processes)} Deployment(s) ready, story passed, stopped cleanly")
    return 0


def eml_files(root):
    """Emails the embedded default wrote as files somewhere in the pods' volumes."""
    found = []
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.endswith(".eml"):
                found.append(open(os.path.join(dirpath, f), encoding="utf-8", errors="replace").read())
    return found


if __name__ == "__main__":
    sys.exit(main())
