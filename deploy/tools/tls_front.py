"""TLS for run_manifests.py: a test CA, certificates for the manifests' TLS Secrets, and TLS
fronts for the local Postgres and Redis, which speak plaintext here.

The certificates are made with openssl, for the run only (one day, a fresh CA each time). A
Secret's certificate names its Services (`lanyard-tenancy`, `lanyard-tenancy.lanyard.svc`, ...) as
cert-manager's would, plus 127.0.0.1: the run dials the loopback address that stands in for a
Service, so a peer that connects to the Service name checks that address instead (the probes
still check the Service name, with `--tls-server-name`).
"""

import os
import socket
import ssl
import struct
import subprocess
import threading

# Postgres asks for TLS with this 8-byte SSLRequest before its startup message.
PG_SSL_REQUEST = struct.pack("!II", 8, 80877103)


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


class TestPki:
    """A CA in `directory`, and leaf certificates signed by it (server and client auth)."""

    def __init__(self, directory):
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", "ca.key", "-out", "ca.crt", "-days", "1", "-subj", "/CN=lanyard run-manifests test CA",
                "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                cwd=directory)
        self.ca_pem = self.read("ca.crt")

    def read(self, name):
        with open(os.path.join(self.dir, name), encoding="ascii") as f:
            return f.read()

    def issue(self, name, dns_names):
        """(certificate PEM, key PEM) for `dns_names` and 127.0.0.1."""
        sans = ",".join([f"DNS:{d}" for d in dns_names] + ["IP:127.0.0.1"])
        with open(os.path.join(self.dir, f"{name}.ext"), "w", encoding="ascii") as f:
            f.write(f"subjectAltName={sans}\nbasicConstraints=critical,CA:FALSE\n"
                    "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n")
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", f"{name}.key",
                "-out", f"{name}.csr", "-subj", f"/CN={dns_names[0]}", cwd=self.dir)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-days", "1", "-extfile", f"{name}.ext", "-out", f"{name}.crt", cwd=self.dir)
        return self.read(f"{name}.crt"), self.read(f"{name}.key")

    def secret(self, name, dns_names):
        """The data of a cert-manager Certificate's Secret."""
        cert, key = self.issue(name, dns_names)
        return {"tls.crt": cert, "tls.key": key, "ca.crt": self.ca_pem}

    def server_context(self, name):
        cert, key = self.issue(name, ["localhost"])
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(os.path.join(self.dir, f"{name}.crt"), os.path.join(self.dir, f"{name}.key"))
        return context


class TlsFront:
    """Accepts TLS on a loopback port and passes the plaintext on to `backend` (host, port).
    `postgres=True` first answers Postgres's SSLRequest, as a TLS-enabled server does; a client
    that starts without TLS is refused (the server would be `hostssl` only)."""

    def __init__(self, context, backend, postgres=False):
        self.context, self.backend, self.postgres = context, backend, postgres
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = "127.0.0.1:%d" % self.listener.getsockname()[1]
        self.handshakes = 0
        self.closed = False
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(client,), daemon=True).start()

    def serve(self, client):
        try:
            if self.postgres:
                if recv_exactly(client, 8) != PG_SSL_REQUEST:
                    client.close()
                    return
                client.sendall(b"S")
            tls = self.context.wrap_socket(client, server_side=True)
            self.handshakes += 1
            upstream = socket.create_connection(self.backend)
        except (OSError, ssl.SSLError):
            client.close()
            return
        threading.Thread(target=pipe, args=(upstream, tls), daemon=True).start()
        pipe(tls, upstream)

    def close(self):
        self.closed = True
        self.listener.close()


def recv_exactly(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def pipe(source, sink):
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            sink.sendall(data)
    except (OSError, ssl.SSLError):
        pass
    finally:
        # shutdown, not only close: the other direction's thread is blocked reading one of them.
        for s in (source, sink):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
