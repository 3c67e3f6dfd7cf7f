"""Behind single sign-on: the real server in BIP_AUTH=proxy mode takes the user and groups from the
proxy's headers (here the proxy is this machine, 127.0.0.1) and scopes the page by the job-centre groups.
No model is needed for the search page, so none is trained."""

from __future__ import annotations

import os
import re

import httpx
import pytest
from conftest import small_dataset
from conftest_service import free_port, start_server, wait_for

from features import store
from serving.process import stop_process_tree

pytestmark = pytest.mark.xdist_group("service")


@pytest.fixture(scope="module")
def proxied(tmp_path_factory):
    home = tmp_path_factory.mktemp("proxy")
    store.ingest(small_dataset(), f"sqlite:///{home / 'store.db'}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BIP_", "MLFLOW_"))}
    env.update(
        BIP_HOME=str(home),
        MLFLOW_TRACKING_URI=f"sqlite:///{home / 'mlflow.db'}",
        BIP_AUTH="proxy",
        BIP_TRUSTED_PROXIES="127.0.0.1",
        BIP_MODEL_POLL_SECONDS="0",
        BENTOML_HOME=str(home / "bentoml"),
    )
    port, log = free_port(), home / "server.log"
    process = start_server(env, port, log)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    try:
        wait_for(lambda: client.get("/livez").status_code == 200, 180, f"the server to start (log: {log})")
        yield client
    finally:
        client.close()
        stop_process_tree(process)


def listed(answer: httpx.Response) -> set[str]:
    return set(re.findall(r'href="/caseworker/citizen/([^"?]+)', answer.text))


def test_the_proxys_user_and_groups_sign_in_and_scope_the_page(proxied):
    dataset = small_dataset()
    centres = sorted(dataset.citizens["jobcentre"].unique())
    first = centres[0]
    mine = set(dataset.citizens.loc[dataset.citizens["jobcentre"] == first, "citizen_id"])
    headers = {"X-Forwarded-User": "anna.sso", "X-Forwarded-Groups": f"staff,bip-role-caseworker,bip-jobcentre-{first}"}
    answer = proxied.get("/caseworker/?q=", headers=headers)
    assert answer.status_code == 200 and "anna.sso" in answer.text
    assert listed(answer) == mine and len(mine) < len(dataset.citizens)
    other = sorted(set(dataset.citizens["citizen_id"]) - mine)[0]
    assert proxied.get(f"/caseworker/citizen/{other}", headers=headers).status_code == 404


def test_without_the_headers_or_without_a_role_nobody_gets_in(proxied):
    assert proxied.get("/caseworker/", follow_redirects=False).status_code == 303
    no_role = {"X-Forwarded-User": "bo.sso", "X-Forwarded-Groups": "staff"}
    assert proxied.get("/caseworker/", headers=no_role, follow_redirects=False).status_code == 403
    researcher = {"X-Forwarded-User": "cy.sso", "X-Forwarded-Groups": "bip-role-researcher"}
    assert proxied.get("/metrics", headers=researcher).status_code == 200
    assert proxied.get("/caseworker/", headers=researcher, follow_redirects=False).status_code == 403


def test_the_login_form_says_to_use_single_sign_on(proxied):
    form = proxied.get("/caseworker/login")
    assert form.status_code == 200 and 'id="login-proxy"' in form.text and 'id="login-form"' not in form.text
    refused = proxied.post("/caseworker/login", data={"name": "x", "password": "y" * 12})
    assert refused.status_code == 403
