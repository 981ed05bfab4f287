"""An application signing people in through Lanyard with Authlib (a second OIDC client library).

Discovery, authorization code with PKCE S256, state and nonce, the ID token's signature checked
against Lanyard's JWKS, userinfo, and a refresh that must rotate the refresh token. The browser
is the caller's: this prints the authorization URL as one JSON line, serves the redirect URI on
loopback for one request, and prints the outcome as a last JSON line (exit 0 only if every check
held).
"""

import argparse
import http.server
import json
import sys
import threading
import urllib.parse

import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session
from joserfc import jwt
from joserfc.jwk import KeySet


def emit(**fields):
    print(json.dumps(fields), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--issuer", required=True)
    ap.add_argument("--client-id", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--organization", required=True)
    ap.add_argument("--login-hint", default=None)
    args = ap.parse_args()

    meta = requests.get(args.issuer.rstrip("/") + "/.well-known/openid-configuration", timeout=10).json()
    assert meta["issuer"] == args.issuer, meta["issuer"]
    assert meta["code_challenge_methods_supported"] == ["S256"], meta
    redirect_uri = f"http://127.0.0.1:{args.port}/callback"
    session = OAuth2Session(
        args.client_id,
        redirect_uri=redirect_uri,
        scope="openid email profile",
        code_challenge_method="S256",
        token_endpoint_auth_method="none",
    )
    verifier = generate_token(48)
    nonce = generate_token(24)
    extra = {"organization": args.organization}
    if args.login_hint:
        extra["login_hint"] = args.login_hint
    url, state = session.create_authorization_url(
        meta["authorization_endpoint"], code_verifier=verifier, nonce=nonce, **extra
    )

    arrived = {}

    class Callback(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            arrived["url"] = f"http://127.0.0.1:{args.port}{self.path}"
            body = b"<!doctype html><html lang='en'><head><title>Authlib application</title></head>" \
                   b"<body><main><h1>Back at the Authlib application</h1></main></body></html>"
            self.send_response(200)
            self.send_header("content-type", "text/html; charset=utf-8")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_):
            pass

    server = http.server.HTTPServer(("127.0.0.1", args.port), Callback)
    thread = threading.Thread(target=server.handle_request, daemon=True)
    thread.start()
    emit(authorize_url=url)
    thread.join(timeout=90)
    server.server_close()
    if "url" not in arrived:
        emit(ok=False, error="the browser never came back")
        return 1

    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(arrived["url"]).query))
    assert query.get("iss") == args.issuer, f"RFC 9207 iss: {query.get('iss')!r}"
    # Authlib checks the state against the one it made, then redeems the code with the verifier.
    token = session.fetch_token(
        meta["token_endpoint"], authorization_response=arrived["url"], code_verifier=verifier, state=state
    )
    # The ID token's signature against Lanyard's JWKS (joserfc, Authlib's JOSE library).
    jwks = KeySet.import_key_set(requests.get(meta["jwks_uri"], timeout=10).json())
    algorithms = ["ES256", "EdDSA", "RS256"]
    claims = jwt.decode(token["id_token"], jwks, algorithms=algorithms).claims
    jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": args.issuer},
        aud={"essential": True, "value": args.client_id},
        nonce={"essential": True, "value": nonce},
        sub={"essential": True},
    ).validate(claims)
    userinfo = session.get(meta["userinfo_endpoint"]).json()
    assert userinfo["sub"] == claims["sub"], userinfo

    refreshed = session.refresh_token(meta["token_endpoint"], refresh_token=token["refresh_token"])
    assert refreshed["refresh_token"] != token["refresh_token"], "the refresh token did not rotate"
    assert refreshed["access_token"] != token["access_token"]
    refreshed_claims = jwt.decode(refreshed["id_token"], jwks, algorithms=algorithms).claims
    assert refreshed_claims["sub"] == claims["sub"]

    # The used refresh token again: refused (and, as reuse, it ends the session).
    reuse = requests.post(
        meta["token_endpoint"],
        data={"grant_type": "refresh_token", "refresh_token": token["refresh_token"], "client_id": args.client_id},
        timeout=10,
    )
    emit(
        ok=True,
        claims={k: claims.get(k) for k in ("sub", "email", "org_id", "org_slug", "roles", "nonce", "aud")},
        userinfo=userinfo,
        access_token=refreshed["access_token"],
        reuse_status=reuse.status_code,
        reuse_error=reuse.json().get("error"),
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # the caller reads the last line
        emit(ok=False, error=f"{type(e).__name__}: {e}")
        sys.exit(1)
