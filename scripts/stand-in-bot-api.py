#!/usr/bin/env python3
"""A Bot API that never has an update, for measuring an idle aegis-gateway (scripts/size.sh,
scripts/hot-text.py): getMe names a bot, getUpdates long-polls 25 s and returns nothing,
every other method succeeds. Usage: stand-in-bot-api.py PORT"""
import http.server
import json
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


http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
