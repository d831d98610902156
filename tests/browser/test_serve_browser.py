"""`nora serve` called from a web page in Chromium, as a student's own page on this machine calls it.

The page is served by a small HTTP server on 127.0.0.1 and opened as http://localhost:PORT, as a
dev server serves one; its fetch() calls go over real HTTP to a real `nora serve` on 127.0.0.1.  Which pages are refused
is checked without a browser in tests/test_serve.py (the browser's only part there is its Origin header).
"""

from __future__ import annotations

import http.server
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.model, pytest.mark.timeout(120)]
ROOT = Path(__file__).resolve().parents[2]

# fetch(url, body) from the page: "status text", or "THROWN ..." when the browser hides the answer
CALL = """async ([url, body]) => {
  try {
    const init = body === null ? {} : {method: "POST", body: JSON.stringify(body),
                                       headers: {"Content-Type": "application/json", "Authorization": "Bearer any"}};
    const answer = await fetch(url, init);
    return answer.status + " " + await answer.text();
  } catch (error) { return "THROWN " + error; }
}"""


class _Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        body = b"<!doctype html><title>my chat page</title>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def page_url():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://localhost:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def api():
    pytest.importorskip("llama_cpp.server.app")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("OPENAI_", "NORA_"))}
    proc = subprocess.Popen([sys.executable, "-m", "nora_widgets.cli", "serve", "--port", str(port), "--n-ctx", "512"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(60)
    try:
        assert box and box[0].startswith("Serving "), "nora serve did not start"
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.kill()
        proc.wait()


def test_a_page_on_this_machine_reads_replies_and_nora_serves_own_answers(api, page_url, browser_page):
    # the 400 and models.retrieve were "TypeError: Failed to fetch": nora serve writes them in front of
    # llama-cpp-python's CORS layer, so they had no Access-Control-Allow-Origin header
    browser_page.goto(page_url)
    messages = [{"role": "user", "content": "Say hi."}]
    reply = browser_page.evaluate(CALL, [f"{api}/chat/completions", {"model": "m", "messages": messages,
                                                                     "max_tokens": 3}])
    assert reply.startswith('200 {"id":"chatcmpl-'), reply
    streamed = browser_page.evaluate(CALL, [f"{api}/chat/completions", {"model": "m", "messages": messages,
                                                                        "max_tokens": 3, "stream": True}])
    assert streamed.startswith("200 data: {") and streamed.rstrip().endswith("data: [DONE]"), streamed
    refused = browser_page.evaluate(CALL, [f"{api}/chat/completions", {"model": "m", "messages": messages, "n": 2}])
    assert refused.startswith("400 {\"error\": {\"message\": \"Invalid 'n': 2; "), refused
    model = browser_page.evaluate(CALL, [f"{api}/models/SmolLM2-135M-Instruct", None])
    assert model.startswith('200 {"id": "SmolLM2-135M-Instruct"'), model
    missing = browser_page.evaluate(CALL, [f"{api}/responses", {"model": "m", "input": "hi"}])
    assert missing.startswith('404 {"error": {"message": "Unknown request URL: POST /v1/responses.'), missing
