#!/usr/bin/env python3
"""A webhook receiver written from docs/CONTRACT.md alone (no natshook code).

Prints each delivery and whether its signature verified. Standard library only.

    receiver.py --port 8080 --route /crm hex SECRET --route /helpdesk standard whsec_...
    [--fail-first EVENT]   answer 503 to the first attempt of EVENT (shows retries)
"""
import argparse, base64, hashlib, hmac, json, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# One request per thread: without a lock two lines can interleave on stdout.
print_lock = threading.Lock()


def verify(scheme, secret, headers, body):
    if scheme in ("hex", "sha256"):
        got = headers.get("X-Webhook-Signature", "")
        want = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        if scheme == "sha256":
            want = "sha256=" + want
        return hmac.compare_digest(got, want)
    # Standard Webhooks: v1,<base64 HMAC(key, "{id}.{timestamp}.{body}")>
    key = base64.b64decode(secret[len("whsec_"):]) if secret.startswith("whsec_") else secret.encode()
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    want = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(s.split(",", 1)[-1], want) for s in headers.get("webhook-signature", "").split())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--route", nargs=3, action="append", metavar=("PATH", "SCHEME", "SECRET"), default=[])
    ap.add_argument("--fail-first", action="append", default=[], metavar="EVENT")
    args = ap.parse_args()
    routes = {p: (scheme, secret) for p, scheme, secret in args.route}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            scheme, secret = routes.get(self.path, ("hex", ""))
            ok = verify(scheme, secret, self.headers, body)
            event = self.headers.get("X-Webhook-Event")
            attempt = self.headers.get("X-Webhook-Attempt")
            status = 200 if ok else 401
            if ok and event in args.fail_first and attempt == "1":
                status = 503
            try:
                data = json.dumps(json.loads(body).get("data"))
            except ValueError:
                data = body[:60]
            with print_lock:
                print(f"[receiver] {self.path:<10} event={event:<22} id={self.headers.get('X-Webhook-Id')} "
                      f"attempt={attempt} signature={'valid' if ok else 'INVALID'} ({scheme}) -> {status}  data={data}",
                      flush=True)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    ThreadingHTTPServer((args.host, args.port), Handler).serve_forever()


if __name__ == "__main__":
    sys.exit(main())
