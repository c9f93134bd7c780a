#!/usr/bin/env python3
"""A Bot API that never has an update, for measuring an idle aegis-gateway (scripts/size.sh,
scripts/hot-text.py): getMe names a bot, getUpdates long-polls 25 s and returns nothing,
every other method succeeds. With CERT and KEY it serves HTTPS (tests/fixtures/tls), as the real
API does. It listens on 127.0.0.1 unless given ADDR (scripts/deployed_net.py resolves
api.telegram.org to 127.0.0.2). Usage: stand-in-bot-api.py [ADDR:]PORT [CERT KEY]"""
import http.server
import json
import ssl
import sys
import time


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path.endswith("/getUpdates"):
            time.sleep(25)
            result = []
        elif self.path.endswith("/getMe"):
            result = {"id": 1, "is_bot": True, "first_name": "t", "username": "t_bot"}
        else:
            result = True
        body = json.dumps({"ok": True, "result": result}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


addr, _, port = sys.argv[1].rpartition(":")
server = http.server.ThreadingHTTPServer((addr or "127.0.0.1", int(port)), Handler)
if len(sys.argv) == 4:
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(sys.argv[2], sys.argv[3])
    server.socket = tls.wrap_socket(server.socket, server_side=True)
server.serve_forever()
