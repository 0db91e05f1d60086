"""A public OAuth client in Chromium: a single-page app on its own origin uses PKCE and CORS.

The page is served by a second HTTP server on 127.0.0.1, so it is another
origin than F-KOD. It makes the PKCE verifier with Web Crypto, sends the
browser to the authorization page, and on its callback exchanges the code
and calls the gateway with ``fetch``. Chromium lets the page read those
responses only if F-KOD sends CORS headers for the page's origin.
"""

from __future__ import annotations

import contextlib
import functools
import json
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlencode

import requests

from fkod.core.testing import TEST_PASSWORD, TestClient, auth_header

# The app's start page: it makes the verifier and the challenge, keeps the verifier in
# sessionStorage and goes to the authorization endpoint.
START_PAGE = """<!doctype html>
<meta charset="utf-8"><title>Study Buddy</title>
<script>
const config = JSON.parse(new URLSearchParams(location.search).get("config"));
sessionStorage.setItem("config", JSON.stringify(config));
const bytes = crypto.getRandomValues(new Uint8Array(32));
const b64url = (buffer) => btoa(String.fromCharCode(...new Uint8Array(buffer)))
  .replace(/\\+/g, "-").replace(/\\//g, "_").replace(/=+$/, "");
const verifier = b64url(bytes);
sessionStorage.setItem("verifier", verifier);
crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)).then((digest) => {
  const query = new URLSearchParams({
    response_type: "code", client_id: config.client_id, redirect_uri: config.redirect_uri,
    scope: "users:read", state: "spa-state", code_challenge: b64url(digest),
    code_challenge_method: "S256"});
  location.assign(config.server + "/oauth/authorize?" + query);
});
</script>
"""

# The callback: exchange the code with fetch, call the gateway, and show what happened.
CALLBACK_PAGE = """<!doctype html>
<meta charset="utf-8"><title>Study Buddy callback</title>
<pre id="result">working</pre>
<script>
const show = (value) => { document.getElementById("result").textContent = value; };
const config = JSON.parse(sessionStorage.getItem("config"));
const params = new URLSearchParams(location.search);
const form = new URLSearchParams({
  grant_type: "authorization_code", code: params.get("code"), client_id: config.client_id,
  redirect_uri: config.redirect_uri, code_verifier: sessionStorage.getItem("verifier")});
fetch(config.server + "/oauth/token", {method: "POST", body: form})
  .then((response) => response.json())
  .then((token) => fetch(config.server + "/api/v1/users",
                         {headers: {Authorization: "Bearer " + token.access_token}})
    .then((response) => response.json())
    .then((users) => show(JSON.stringify({state: params.get("state"),
                                          scope: token.scope, users: users.data}))))
  .catch((error) => show("fetch failed: " + error));
</script>
"""


@contextlib.contextmanager
def serve_pages(folder: Path) -> Iterator[str]:
    """Serve the files of ``folder`` on 127.0.0.1 and a free port; yield the origin."""
    handler = functools.partial(QuietFiles, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


def create_public_application(live_url: str, token: str, origin: str) -> dict:
    body = {"name": "Study Buddy", "client_type": "public", "scopes": ["users:read"],
            "redirect_uris": [origin + "/callback.html"], "allowed_origins": [origin]}
    response = requests.post(live_url + "/api/developers/applications", json=body,
                             headers=auth_header(token), timeout=10)
    assert response.status_code == 201, response.text
    return response.json()


def run_flow(page, live_url: str, origin: str, application: dict, email: str,
             screenshots) -> str:
    """Open the app's start page, log in and approve; return what the callback shows."""
    config = {"client_id": application["client_id"], "server": live_url,
              "redirect_uri": application["redirect_uris"][0]}
    page.goto(origin + "/start.html?" + urlencode({"config": json.dumps(config)}))
    page.wait_for_url(live_url + "/oauth/authorize?*")
    screenshots.take(page, "login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(TEST_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("button", name="Allow").wait_for()
    screenshots.take(page, "consent")
    page.get_by_role("button", name="Allow").click()
    page.wait_for_url(origin + "/callback.html?*")
    result = page.locator("#result")
    result.filter(has_not_text="working").wait_for()
    screenshots.take(page, "callback")
    return result.inner_text()


def test_public_client_in_browser(app, live_url, new_page, screenshots, tmp_path):
    client = TestClient(app)
    registered = client.register_partner()
    email = registered["user"]["email"]
    token = client.login(email)
    (tmp_path / "start.html").write_text(START_PAGE)
    (tmp_path / "callback.html").write_text(CALLBACK_PAGE)

    with serve_pages(tmp_path) as origin:
        application = create_public_application(live_url, token, origin)
        callback_text = run_flow(new_page(), live_url, origin, application, email, screenshots)

    result = json.loads(callback_text)
    assert result["state"] == "spa-state"
    assert result["scope"] == "users:read"
    assert len(result["users"]) == 1
    assert result["users"][0]["id"].startswith("user_")


def test_unregistered_origin_blocked_in_browser(app, live_url, new_page, screenshots,
                                                tmp_path):
    client = TestClient(app)
    registered = client.register_partner()
    email = registered["user"]["email"]
    token = client.login(email)
    (tmp_path / "start.html").write_text(START_PAGE)
    (tmp_path / "callback.html").write_text(CALLBACK_PAGE)

    with serve_pages(tmp_path) as origin, serve_pages(tmp_path) as other_origin:
        application = create_public_application(live_url, token, other_origin)
        # Register the page's real callback too, so only the CORS origin differs.
        response = requests.put(
            f"{live_url}/api/developers/applications/{application['id']}",
            json={"redirect_uris": [origin + "/callback.html"]},
            headers=auth_header(token), timeout=10)
        assert response.status_code == 200, response.text
        application = response.json()
        callback_text = run_flow(new_page(), live_url, origin, application, email, screenshots)

    assert callback_text.startswith("fetch failed: TypeError")
