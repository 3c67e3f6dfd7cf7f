"""Users, tokens, the audit trail and assessments in a real store (SQLite, and PostgreSQL where
BIP_TEST_POSTGRES_URL is set: fixture `store_url`)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from bip.errors import UserError
from features import store
from serving import accounts, audit
from serving.accounts import Directory, Role
from serving.audit import AuditTrail, Event, UnknownView

PASSWORD = "a long enough password"


def test_users_sign_in_with_their_password_and_tokens_until_revoked(store_url):
    accounts.add_user(store_url, "anna", Role.caseworker, ["A", "B"], PASSWORD)
    anna = accounts.login(store_url, "anna", PASSWORD)
    assert anna is not None and anna.roles == {Role.caseworker} and anna.jobcentres == {"A", "B"}
    assert accounts.login(store_url, "anna", PASSWORD + "!") is None
    assert accounts.login(store_url, "nobody", PASSWORD) is None
    token = accounts.issue_token(store_url, "anna")
    directory = Directory(store_url)
    assert directory.token(token).user_id == "anna"
    assert directory.token(token[:-1] + ("x" if token[-1] != "x" else "y")) is None
    accounts.revoke(store_url, "anna")
    assert accounts.login(store_url, "anna", PASSWORD) is None
    assert Directory(store_url).token(token) is None  # a fresh directory: no cache
    assert Directory(store_url).user("anna", time.time()) is None
    [row] = accounts.users(store_url)
    assert row.revoked_at is not None and row.tokens == 0


def test_secrets_are_stored_only_as_argon2_hashes(store_url):
    accounts.add_user(store_url, "bo", Role.service, password=PASSWORD)
    token = accounts.issue_token(store_url, "bo")
    with store.engine(store_url).connect() as conn:
        stored = " ".join(
            str(v)
            for row in conn.execute(text("SELECT * FROM users")).all()
            + conn.execute(text("SELECT * FROM api_tokens")).all()
            for v in row
        )
    assert PASSWORD not in stored and token.split("_")[-1] not in stored
    assert stored.count("$argon2id$") == 2


@pytest.mark.parametrize(
    ("name", "role", "centres", "password"),
    [
        ("Anna", Role.caseworker, ["A"], PASSWORD),  # upper case
        ("anna", Role.caseworker, [], PASSWORD),  # a caseworker without a job centre
        ("anna", Role.admin, ["A"], PASSWORD),  # only caseworkers are scoped
        ("anna", Role.admin, [], "short"),
    ],
)
def test_bad_users_are_refused(store_url, name, role, centres, password):
    with pytest.raises(UserError):
        accounts.add_user(store_url, name, role, centres, password)
    assert accounts.users(store_url) == []


def test_a_name_is_taken_once(store_url):
    accounts.add_user(store_url, "cy", Role.researcher, password=PASSWORD)
    with pytest.raises(UserError, match="exists"):
        accounts.add_user(store_url, "cy", Role.admin, password=PASSWORD)


def view(trail: AuditTrail, principal, citizen_id: str = "c10", probability: float = 0.31) -> int:
    (view_id,) = trail.append(
        [
            Event.by(
                principal,
                "page_view",
                citizen_id=citizen_id,
                model_name="m",
                model_version="4",
                probability=probability,
            )
        ]
    )
    return view_id


def test_an_assessment_answers_the_users_own_view_with_the_servers_numbers(store_url):
    accounts.add_user(store_url, "anna", Role.caseworker, ["A"], PASSWORD)
    accounts.add_user(store_url, "bo", Role.caseworker, ["A"], PASSWORD)
    anna, bo = accounts.login(store_url, "anna", PASSWORD), accounts.login(store_url, "bo", PASSWORD)
    trail = AuditTrail(store_url)
    seen = view(trail, anna)
    assessment_id, citizen = trail.record_assessment(anna, seen, "higher", "Starts a wage subsidy.")
    [stored] = audit.assessments(store_url, "c10")
    assert citizen == "c10" and stored["id"] == assessment_id
    assert (stored["user_id"], stored["role"], stored["view_id"]) == ("anna", "caseworker", seen)
    assert (stored["probability_shown"], stored["model_version"]) == (0.31, "4")
    events = audit.events(store_url, citizen_id="c10")
    assert [(e["event"], e["user_id"]) for e in events] == [("page_view", "anna"), ("assessment", "anna")]
    assert "wage subsidy" not in str(events)  # the free-text reason stays in the assessment table
    with pytest.raises(UnknownView):
        trail.record_assessment(bo, seen, "agree", None)  # not bo's view
    with pytest.raises(UnknownView):
        trail.record_assessment(anna, seen + 100, "agree", None)
    assert len(audit.assessments(store_url, "c10")) == 1 and len(audit.events(store_url)) == 2


def test_the_audit_table_is_append_only(store_url):
    trail = AuditTrail(store_url)
    trail.append([Event("login", user_id="anna", role="caseworker")])
    for statement in ("UPDATE audit_events SET user_id = 'eve'", "DELETE FROM audit_events"):
        with pytest.raises(DBAPIError, match="append-only"), store.write_transaction(store_url) as conn:
            conn.execute(text(statement))
    assert [e["user_id"] for e in audit.events(store_url)] == ["anna"]


def test_events_are_read_by_time_citizen_and_kind(store_url):
    trail = AuditTrail(store_url)
    principal = accounts.Principal("anna", frozenset({Role.caseworker}), frozenset({"A"}), "session")
    view(trail, principal, "c1")
    view(trail, principal, "c2")
    trail.append([Event("login_failed", user_id="anna")])
    assert [e["citizen_id"] for e in audit.events(store_url, event="page_view")] == ["c1", "c2"]
    assert len(audit.events(store_url, citizen_id="c2")) == 1
    assert audit.events(store_url, since=datetime.now(UTC) + timedelta(minutes=1)) == []
    assert audit.count_since(store_url, "login_failed", "anna", datetime.now(UTC) - timedelta(minutes=5)) == 1


def test_assessments_of_an_older_store_gain_the_new_columns(store_url):
    with store.write_transaction(store_url) as conn:
        conn.execute(
            text(
                "CREATE TABLE caseworker_assessments (id INTEGER PRIMARY KEY, citizen_id VARCHAR NOT NULL, "
                "recorded_at TIMESTAMP NOT NULL, probability_shown FLOAT NOT NULL, model_version VARCHAR NOT NULL, "
                "assessment VARCHAR NOT NULL, reason TEXT)"
            )
        )
        conn.execute(
            text("INSERT INTO caseworker_assessments VALUES (1, 'c10', '2024-05-02 09:30:00', 0.4, '7', 'agree', NULL)")
        )
    AuditTrail(store_url).append([Event("login", user_id="anna")])
    [old] = audit.assessments(store_url, "c10")
    assert old["assessment"] == "agree" and old["user_id"] is None


def _append_many(url: str, writer: str, count: int) -> None:
    trail = AuditTrail(url)
    for k in range(count):
        trail.append(
            [Event("api_predict", user_id=writer, role="service", citizen_id=f"{writer}-{k}", probability=k / count)]
        )


def test_two_processes_append_audit_rows_at_once_and_none_is_lost(store_url):
    """Two OS processes (as two service replicas would) append to one store at the same time."""
    import multiprocessing

    AuditTrail(store_url).append([Event("login", user_id="setup")])  # the tables exist before the race
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_append_many, args=(store_url, name, 150)) for name in ("one", "two")]
    for process in writers:
        process.start()
    for process in writers:
        process.join(timeout=240)
        assert process.exitcode == 0
    rows = audit.events(store_url, event="api_predict")
    assert len(rows) == 300 and len({r["id"] for r in rows}) == 300
    for name in ("one", "two"):
        mine = [r for r in rows if r["user_id"] == name]
        assert [r["citizen_id"] for r in mine] == [f"{name}-{k}" for k in range(150)]  # in order, none missing
        assert all(r["role"] == "service" and r["probability"] is not None for r in mine)


def test_audit_rows_can_also_go_to_stdout_as_json_lines(tmp_path, capsys):
    import json

    url = f"sqlite:///{tmp_path / 'store.db'}"
    AuditTrail(url, stdout=True).append([Event("page_view", user_id="anna", role="caseworker", citizen_id="c1")])
    [line] = capsys.readouterr().out.splitlines()
    record = json.loads(line)
    assert (record["event"], record["user_id"], record["citizen_id"]) == ("page_view", "anna", "c1")
    assert record["id"] == audit.events(url)[0]["id"]


def test_signing_out_ends_the_sessions_issued_before(store_url):
    accounts.add_user(store_url, "anna", Role.caseworker, ["A"], PASSWORD)
    before = time.time()
    assert Directory(store_url).user("anna", before).user_id == "anna"
    accounts.end_sessions(store_url, "anna")
    after = time.time()
    assert Directory(store_url).user("anna", before) is None  # a copied cookie of the old session
    assert Directory(store_url).user("anna", after + 0.001).user_id == "anna"  # a new sign-in
    accounts.set_password(store_url, "anna", PASSWORD + "2")
    assert Directory(store_url).user("anna", after + 0.001) is None


@pytest.mark.parametrize("jobcentre", ["", "  ", "Aar\nhus", "Aar\x00hus"])
def test_a_caseworkers_job_centre_is_a_plain_name(store_url, jobcentre):
    with pytest.raises(UserError, match="not empty, without control characters"):
        accounts.add_user(store_url, "dora", accounts.Role.caseworker, [jobcentre], "correct horse battery staple")
    assert accounts.users(store_url) == []
