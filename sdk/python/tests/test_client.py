"""The client against a real Conveyor: submit, long-poll, pages, cancel, replay, field errors."""

import pytest

from conveyor import ApiError


def test_a_job_is_submitted_and_long_polled_to_its_result(client):
    job = client.submit_job("echo", {"hello": "python"}, metadata={"from": "sdk"})
    assert job["status"] in ("queued", "running", "succeeded")
    done = client.wait_for_job(job["id"], timeout=30)
    assert done["status"] == "succeeded"
    assert done["result"] == {"hello": "python"}
    assert done["metadata"] == {"from": "sdk"}
    attempts = client.list_job_attempts(job["id"])
    assert [a["outcome"] for a in attempts] == ["succeeded"]


def test_an_idempotency_key_returns_the_original_job(client, type_name):
    first = client.submit_job("echo", {"n": 1}, idempotency_key=type_name)
    again = client.submit_job("echo", {"n": 1}, idempotency_key=type_name)
    assert again["id"] == first["id"]
    with pytest.raises(ApiError) as refused:
        client.submit_job("echo", {"n": 2}, idempotency_key=type_name)
    assert refused.value.status == 409


def test_pages_go_through_every_job(client, type_name):
    ids = {client.submit_job("echo", {"i": i}, metadata={"run": type_name})["id"] for i in range(5)}
    seen = [j["id"] for j in client.iter_jobs(type="echo", limit=2)]
    assert ids <= set(seen)
    assert len(seen) == len(set(seen)), "no job twice"


def test_a_422_names_each_bad_field(client):
    with pytest.raises(ApiError) as refused:
        client.submit_job("echo", {}, max_attempts=0, queue="no such queue")
    assert refused.value.status == 422
    assert "max_attempts" in refused.value.fields()
    assert "queue" in refused.value.fields()


def test_a_scheduled_job_is_cancelled_and_a_cancelled_one_replayed(client):
    job = client.submit_job("echo", {"later": True}, delay_seconds=3600)
    assert job["status"] == "scheduled"
    cancelled = client.cancel_job(job["id"])
    assert cancelled["status"] == "cancelled"
    replayed = client.replay_job(job["id"], payload={"now": True})
    done = client.wait_for_job(replayed["id"], timeout=30)
    assert done["status"] == "succeeded"
    assert done["result"] == {"now": True}


def test_job_types_are_declared_listed_and_removed(client, type_name):
    declared = client.declare_job_type(type_name, payload_schema={"type": "object", "required": ["a"]})
    assert declared["builtin"] is False
    names = {t["name"] for t in client.list_job_types()}
    assert {"echo", type_name} <= names
    with pytest.raises(ApiError) as refused:
        client.submit_job(type_name, {"b": 1})
    assert refused.value.status == 422
    assert refused.value.fields() == ["payload.a"]
    client.delete_job_type(type_name)
    assert type_name not in {t["name"] for t in client.list_job_types()}
