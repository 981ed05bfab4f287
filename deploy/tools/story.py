"""The story run_manifests.py tells the started services, through the Services' addresses only.

An operator creates an organization with its owner, adds a member, invites a colleague by email
(the email must be delivered: to the SMTP server of the test values, or as a file in dev) and another by link, checks seats and
the invitation list; the invitee previews the link; a gateway fetches the JWKS over gRPC and HTTP;
a service asks Authorize about a token that is no Lanyard token and is told so (not UNAVAILABLE);
the split processes refuse what they do not serve.
"""

import http.client
import json
import os
import socket
import socketserver
import subprocess
import sys
import threading
import ssl
import time
import urllib.error
import urllib.request

# gRPC's own INFO lines (a probe of a port that is no gRPC port fails its handshake) are noise here.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import grpc  # noqa: E402  (reads GRPC_VERBOSITY when imported)
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVICES = {
    "tenancy": "lanyard.tenancy.v1.TenancyService",
    "invitation": "lanyard.invitation.v1.InvitationService",
    "token": "lanyard.token.v1.TokenService",
}


class StoryFailure(Exception):
    """The services started but did not do what the story needs."""


def channel(address, roots=None, server_name=None):
    """A channel to `address`: TLS checked against `roots` (PEM bytes), for `server_name`, if given."""
    if roots is None:
        return grpc.insecure_channel(address)
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    return grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=roots), options)


def health(address, service, roots=None, server_name=None):
    """(SERVING?, what was seen) for one gRPC health check, as a grpc probe asks it."""
    try:
        with channel(address, roots, server_name) as channel_:
            reply = health_pb2_grpc.HealthStub(channel_).Check(health_pb2.HealthCheckRequest(service=service),
                                                               timeout=2)
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        return reply.status == health_pb2.HealthCheckResponse.SERVING, status
    except grpc.RpcError as e:
        return False, e.code().name


def psql(admin_url, sql):
    subprocess.run(["psql", "--no-psqlrc", "-q", "-v", "ON_ERROR_STOP=1", admin_url, "-c", sql], check=True)


def create_database(admin_url, name, migrate_role, app_role):
    """A fresh database and the two roles of deploy/README.md ("Database roles"): the migration
    role may create schemas in it, and everything it creates is readable and writable, row by
    row only, by the runtime role."""
    psql(admin_url, f"CREATE DATABASE {name}")
    psql(admin_url, f"CREATE ROLE {migrate_role} LOGIN; CREATE ROLE {app_role} LOGIN; "
                    f"GRANT CONNECT, CREATE ON DATABASE {name} TO {migrate_role}; "
                    f"GRANT CONNECT ON DATABASE {name} TO {app_role}")
    psql(admin_url.rsplit("/", 1)[0] + "/" + name,
         f"REVOKE ALL ON SCHEMA public FROM PUBLIC; "
         f"ALTER DEFAULT PRIVILEGES FOR ROLE {migrate_role} GRANT USAGE ON SCHEMAS TO {app_role}; "
         f"ALTER DEFAULT PRIVILEGES FOR ROLE {migrate_role} "
         f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {app_role}; "
         f"ALTER DEFAULT PRIVILEGES FOR ROLE {migrate_role} GRANT USAGE, SELECT ON SEQUENCES TO {app_role}")
    print(f"==> created database {name}, migration role {migrate_role}, runtime role {app_role}")


def drop_database(admin_url, name, migrate_role, app_role):
    psql(admin_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    psql(admin_url, f"DROP ROLE IF EXISTS {app_role}; DROP ROLE IF EXISTS {migrate_role}")
    print(f"==> dropped database {name} and its roles")


class SmtpSink:
    """A minimal SMTP server on loopback that keeps every message it is given."""

    def __init__(self):
        messages = self.messages = []

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                self.wfile.write(b"220 sink ESMTP\r\n")
                data = None
                for raw in self.rfile:
                    line = raw.decode("utf-8", "replace")
                    if data is not None:
                        if line in (".\r\n", ".\n"):
                            messages.append("".join(data))
                            data = None
                            self.wfile.write(b"250 queued\r\n")
                        else:
                            data.append(line[1:] if line.startswith("..") else line)
                        continue
                    verb = line[:4].upper()
                    if verb == "EHLO":
                        self.wfile.write(b"250-sink\r\n250 8BITMIME\r\n")
                    elif verb == "DATA":
                        data = []
                        self.wfile.write(b"354 go ahead\r\n")
                    elif verb == "QUIT":
                        self.wfile.write(b"221 bye\r\n")
                        return
                    else:
                        self.wfile.write(b"250 ok\r\n")

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.address = "127.0.0.1:%d" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def load_stubs(proto_dir, out):
    from grpc_tools import protoc

    os.makedirs(out, exist_ok=True)
    files = [os.path.join(d, f) for d, _, fs in os.walk(proto_dir) for f in fs if f.endswith(".proto")]
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    if protoc.main(["protoc", f"-I{proto_dir}", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}"]
                   + files) != 0:
        raise StoryFailure("could not compile the protos")
    sys.path.insert(0, out)


def expect_code(call, code, what):
    try:
        call()
    except grpc.RpcError as e:
        if e.code() != code:
            raise StoryFailure(f"{what}: expected {code.name}, got {e.code().name}: {e.details()}")
        return e
    raise StoryFailure(f"{what}: expected {code.name}, it succeeded")


def wait_for(what, check, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise StoryFailure(f"{what}: not within {seconds}s")


def step(text):
    print(f"    story: {text}")


def run(proto_dir, stubs_dir, endpoints, api_key, mail, processes, tls_ca=None):
    """The story. `endpoints` maps `service-name:port` to the loopback address behind it; `mail()`
    returns the emails delivered so far (to the SMTP sink, or as files). With `tls_ca` (a PEM file)
    every call is TLS, the server's certificate checked against it for the Service's name, and
    cleartext must be refused."""
    roots = open(tls_ca, "rb").read() if tls_ca else None
    load_stubs(proto_dir, stubs_dir)
    from lanyard.authz.v1 import authz_pb2, authz_pb2_grpc
    from lanyard.invitation.v1 import invitation_pb2 as ipb, invitation_pb2_grpc
    from lanyard.tenancy.v1 import tenancy_pb2 as tpb, tenancy_pb2_grpc
    from lanyard.token.v1 import token_pb2, token_pb2_grpc

    # Which Service answers which gRPC service: as a client sees it, by health through the Service.
    serving = {}
    for name, grpc_name in SERVICES.items():
        for endpoint, address in endpoints.items():
            if health(address, grpc_name, roots, endpoint.split(":")[0])[0]:
                serving[name] = (endpoint, address)
                break
        else:
            raise StoryFailure(f"no Service answers {grpc_name} SERVING")
    for name, (endpoint, _) in serving.items():
        step(f"{name} is served at {endpoint}")
    auth = [("authorization", f"Bearer {api_key}")]
    def to(name):
        endpoint, address = serving[name]
        return channel(address, roots, endpoint.split(":")[0])

    tenancy = tenancy_pb2_grpc.TenancyServiceStub(to("tenancy"))
    invitations = invitation_pb2_grpc.InvitationServiceStub(to("invitation"))
    token_channel = to("token")
    tokens = token_pb2_grpc.TokenServiceStub(token_channel)
    authz = authz_pb2_grpc.AuthorizationServiceStub(token_channel)

    slug = f"acme-{os.urandom(3).hex()}"
    org = tenancy.CreateOrganization(
        tpb.CreateOrganizationRequest(slug=slug, display_name="Acme Corp", seat_limit=5,
                                      allowed_domains=["acme.test"], owner_email="it@acme.test"),
        metadata=auth, timeout=10).organization
    step(f"created organization {slug} ({org.organization_id}) with owner it@acme.test")
    member = tenancy.AddMember(tpb.AddMemberRequest(organization_id=org.organization_id, email="bob@acme.test",
                                                    roles=["admin"]), metadata=auth, timeout=10)
    step(f"added bob@acme.test as admin (user {member.member.user_id})")

    emailed = invitations.CreateInvitation(
        ipb.CreateInvitationRequest(organization_id=org.organization_id, email="carol@acme.test", send_email=True),
        metadata=auth, timeout=10).invitation
    step(f"invited carol@acme.test by email (invitation {emailed.invitation_id})")
    linked = invitations.CreateInvitation(
        ipb.CreateInvitationRequest(organization_id=org.organization_id, email="dan@acme.test", send_email=False),
        metadata=auth, timeout=10)
    link = linked.invitation_link
    if "token=" not in link:
        raise StoryFailure(f"the link invitation came back without a link: {link!r}")
    step("invited dan@acme.test with a link returned to the operator")

    email = wait_for("the invitation email", lambda: next((m for m in mail() if "carol@acme.test" in m), None))
    if "Acme Corp" not in email:
        raise StoryFailure("the invitation email does not name the organization")
    step(f"the invitation email was delivered ({len(email)} bytes)")

    usage = tenancy.GetSeatUsage(tpb.GetSeatUsageRequest(organization_id=org.organization_id), metadata=auth,
                                 timeout=10)
    step(f"seats: {usage}".replace("\n", " "))
    listed = invitations.ListInvitations(ipb.ListInvitationsRequest(organization_id=org.organization_id),
                                         metadata=auth, timeout=10)
    if len(listed.invitations) != 2:
        raise StoryFailure(f"expected 2 invitations, listed {len(listed.invitations)}")

    raw_token = link.split("token=", 1)[1].split("&")[0]
    preview = invitations.PreviewInvitation(ipb.PreviewInvitationRequest(token=raw_token), timeout=10)
    if preview.organization_slug != slug or preview.email != "dan@acme.test":
        raise StoryFailure(f"preview shows {preview.organization_slug} / {preview.email}")
    step("the invitee previewed the link without a credential")

    jwks = tokens.GetJwks(token_pb2.GetJwksRequest(), timeout=10)
    if not jwks.keys:
        raise StoryFailure("GetJwks published no key")
    http_address = next((a for e, a in endpoints.items() if e.startswith(serving["token"][0].split(":")[0] + ":")
                         and e.endswith(":8080")), None)
    if http_address is None:
        raise StoryFailure("the token Service has no port 8080 for /.well-known/jwks.json")
    context = ssl.create_default_context(cafile=tls_ca) if tls_ca else None
    with urllib.request.urlopen(f"{'https' if tls_ca else 'http'}://{http_address}/.well-known/jwks.json", timeout=5,
                                context=context) as r:
        published = json.load(r)
    if {k["kid"] for k in published["keys"]} != {k.kid for k in jwks.keys}:
        raise StoryFailure("the JWKS over HTTP differs from GetJwks")
    step(f"JWKS: {len(jwks.keys)} key(s), the same over gRPC and HTTP")

    decision = authz.Authorize(authz_pb2.AuthorizeRequest(access_token="not-a-token", permission="members:read"),
                               timeout=10)
    if decision.allowed:
        raise StoryFailure("Authorize allowed a token that is no Lanyard token")
    step(f"Authorize answered {authz_pb2.Decision.Name(decision.reason)} for a token that is none")

    # What a split deployment refuses: the processes serve only their own service, and a separate
    # tenancy process accepts API keys only (no access tokens).
    if len({a for _, a in serving.values()}) > 1:
        wrong = tenancy_pb2_grpc.TenancyServiceStub(to("invitation"))
        expect_code(lambda: wrong.GetOrganization(tpb.GetOrganizationRequest(organization_id=org.organization_id),
                                                  metadata=auth, timeout=10),
                    grpc.StatusCode.UNIMPLEMENTED, "TenancyService on the invitation process")
        step("the invitation process answers UNIMPLEMENTED for TenancyService (split mode)")
    expect_code(lambda: tenancy.GetOrganization(tpb.GetOrganizationRequest(organization_id=org.organization_id),
                                                metadata=[("authorization", "Bearer wrong-key-0123456789")],
                                                timeout=10),
                grpc.StatusCode.UNAUTHENTICATED, "GetOrganization with a wrong key")
    step("a wrong API key is UNAUTHENTICATED")
    if roots is not None:
        # No downgrade: every port of every Service answers TLS only.
        for endpoint, address in sorted(endpoints.items()):
            if endpoint.endswith(":50051"):
                ok, seen = health(address, "")
                if ok or seen != "UNAVAILABLE":
                    raise StoryFailure(f"{endpoint} answered cleartext gRPC: {seen}")
            else:
                try:
                    with urllib.request.urlopen(f"http://{address}/", timeout=5):
                        raise StoryFailure(f"{endpoint} answered cleartext HTTP")
                except (OSError, http.client.HTTPException) as e:
                    if isinstance(e, urllib.error.HTTPError):
                        raise StoryFailure(f"{endpoint} answered cleartext HTTP with {e.code}")
        step(f"cleartext is refused on all {len(endpoints)} Service ports (gRPC, HTTP, metrics)")
    for p in processes:
        if p.popen.poll() is not None:
            raise StoryFailure(f"{p.name} exited {p.popen.returncode} during the story")
