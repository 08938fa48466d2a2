# A stand-in for huggingface.co on localhost: serves the hub-sourced files of eval/data_sources.toml
# from the offline folder, with the hub's X-Repo-Commit, ETag (sha256) and byte ranges.
import hashlib, http.server, sys, tomllib
root, sources, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
files = {}
for f in tomllib.load(open(sources, "rb"))["file"]:
    if "repo" in f:
        files[f"/datasets/{f['repo']}/resolve/{f['revision']}/{f['file']}"] = f"{root}/{f['path']}"
class H(http.server.BaseHTTPRequestHandler):
    def send(self, head):
        p = self.path.split("?")[0]
        if p not in files:
            self.send_response(404); self.send_header("Content-Length", "0"); self.end_headers(); return
        body = open(files[p], "rb").read()
        status, rng = 200, self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            s, e = rng[6:].split("-"); s = int(s or 0); e = int(e) if e else len(body) - 1
            status, part = 206, body[s:e + 1]
        else:
            part = body
        self.send_response(status)
        self.send_header("X-Repo-Commit", "0" * 40)
        self.send_header("ETag", '"%s"' % hashlib.sha256(body).hexdigest())
        if status == 206:
            self.send_header("Content-Range", f"bytes {s}-{s + len(part) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(part))); self.end_headers()
        if not head: self.wfile.write(part)
    def do_GET(self): self.send(False)
    def do_HEAD(self): self.send(True)
http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
