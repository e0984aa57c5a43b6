"""The worker runner against a real Conveyor: results, retryable and permanent failures, a
cancelled job stopping its handler, a saga step, SIGTERM handing jobs back, SIGKILL losing
nothing, and webhook signatures."""

import asyncio
import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import pytest

from conveyor import PermanentError, Worker, verify_webhook
from conveyor.webhooks import WebhookVerificationError

HERE = os.path.dirname(__file__)


@contextmanager
def running(worker: Worker):
    """Runs the worker in a thread of its own for the block, then stops it."""
    failure = []

    def main():
        try:
            asyncio.run(worker.run_async())
        except BaseException as e:  # noqa: BLE001 - reported below
            failure.append(e)

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        deadline = time.monotonic() + 10
        while worker._loop is None and time.monotonic() < deadline:
            time.sleep(0.05)
        worker.stop()
        thread.join(30)
        assert not thread.is_alive(), "the worker stops"
        assert not failure, failure


def new_worker(url, key, **options) -> Worker:
    options.setdefault("wait_seconds", 2)
    options.setdefault("lease_seconds", 10)
    return Worker(url, key, **options)


def test_a_task_returns_its_result(client, url, key, type_name):
    worker = new_worker(url, key, name="py-results")

    @worker.task(type_name, payload_schema={"type": "object", "required": ["x"]})
    async def double(ctx):
        return {"double": ctx.payload["x"] * 2, "attempt": ctx.attempt}

    with running(worker):
        time.sleep(1)  # the type is declared as the worker starts
        job = client.submit_job(type_name, {"x": 21})
        done = client.wait_for_job(job["id"], timeout=30)
    assert done["status"] == "succeeded"
    assert done["result"] == {"double": 42, "attempt": 1}
    assert any(w["name"] == "py-results" for w in client.list_workers())


def test_an_exception_is_retried_and_a_permanent_error_is_not(client, url, key, type_name):
    worker = new_worker(url, key)
    seen = []

    @worker.task(type_name)
    def flaky(ctx):
        seen.append(ctx.attempt)
        if ctx.payload.get("permanent"):
            raise PermanentError("this input can never work")
        if ctx.attempt < 3:
            raise RuntimeError(f"attempt {ctx.attempt} failed")
        return "third time"

    with running(worker):
        time.sleep(1)
        retried = client.submit_job(type_name, {}, max_attempts=5)
        done = client.wait_for_job(retried["id"], timeout=60)
        assert done["status"] == "succeeded"
        assert done["result"] == "third time"
        dead = client.submit_job(type_name, {"permanent": True}, max_attempts=5)
        dead = client.wait_for_job(dead["id"], timeout=30)
    assert dead["status"] == "dead"
    assert dead["error"] == "this input can never work"
    outcomes = [a["outcome"] for a in client.list_job_attempts(retried["id"])]
    assert outcomes == ["failed", "failed", "succeeded"]


def test_a_cancelled_job_stops_its_handler(client, url, key, type_name):
    worker = new_worker(url, key, lease_seconds=5)  # a heartbeat every ~1.7 s
    stopped = threading.Event()

    @worker.task(type_name)
    async def long(ctx):
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            stopped.set()
            raise
        return "never"

    with running(worker):
        time.sleep(1)
        job = client.submit_job(type_name, {})
        deadline = time.monotonic() + 20
        while client.get_job(job["id"])["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        client.cancel_job(job["id"])
        assert stopped.wait(10), "the handler was stopped by the refused heartbeat"
    assert client.get_job(job["id"])["status"] == "cancelled"


def test_a_saga_step_sees_the_earlier_results(client, url, key, type_name):
    worker = new_worker(url, key)

    @worker.task(type_name)
    def charge(ctx):
        return {"saw": ctx.saga["results"], "step": ctx.saga["step"]}

    with running(worker):
        time.sleep(1)
        saga = client._call("POST", "/v1/sagas", {"steps": [
            {"name": "reserve", "job": {"type": "echo", "payload": {"seat": "1A"}}},
            {"name": "charge", "job": {"type": type_name, "payload": {}}},
        ]})
        deadline = time.monotonic() + 30
        while True:
            saga = client._call("GET", f"/v1/sagas/{saga['id']}")
            if saga["status"] != "running" or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert saga["status"] == "completed", saga
    charge_job = client.get_job(saga["steps"][1]["job_id"])
    assert charge_job["result"] == {"saw": {"reserve": {"seat": "1A"}}, "step": "charge"}


def spawn(url, key, name, job_type, log, sleep):
    env = {**os.environ, "CONVEYOR_URL": url, "CONVEYOR_KEY": key}
    return subprocess.Popen(
        [sys.executable, os.path.join(HERE, "worker_process.py"), name, job_type, str(log), str(sleep)],
        env=env,
    )


def wait_for_lines(log, n, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        lines = log.read_text().splitlines() if log.exists() else []
        if len(lines) >= n:
            return lines
        assert time.monotonic() < deadline, f"{lines}"
        time.sleep(0.1)


def test_a_worker_killed_mid_job_loses_nothing_and_the_job_ends_once(client, url, key, type_name, tmp_path):
    client.declare_job_type(type_name)
    log = tmp_path / "attempts.log"
    victim = spawn(url, key, "victim", type_name, log, 60)
    try:
        job = client.submit_job(type_name, {}, max_attempts=3)
        wait_for_lines(log, 1)
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
    finally:
        victim.kill()
    rescuer = spawn(url, key, "rescuer", type_name, log, 0)
    try:
        done = client.wait_for_job(job["id"], timeout=60)
    finally:
        rescuer.send_signal(signal.SIGTERM)
        rescuer.wait(20)
    assert done["status"] == "succeeded"
    assert done["result"] == {"by": "rescuer"}
    lines = log.read_text().splitlines()
    assert lines == [f"victim {job['id']} 1", f"rescuer {job['id']} 2"], lines
    outcomes = [a["outcome"] for a in client.list_job_attempts(job["id"])]
    assert outcomes == ["lost", "succeeded"]


def test_sigterm_hands_a_running_job_back_at_once(client, url, key, type_name, tmp_path):
    client.declare_job_type(type_name)
    log = tmp_path / "attempts.log"
    worker = spawn(url, key, "stopping", type_name, log, 60)
    try:
        job = client.submit_job(type_name, {}, max_attempts=1)
        wait_for_lines(log, 1)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(20) == 0
    finally:
        worker.kill()
    # Back in the queue at once, not after its 5 s lease, and not dead on its last attempt.
    queued = client.get_job(job["id"])
    assert queued["status"] == "queued", queued
    assert [a["outcome"] for a in client.list_job_attempts(job["id"])] == ["lost"]
    client.cancel_job(job["id"])


def test_a_delivery_verifies_with_the_endpoints_secret(client):
    received = []

    class Receive(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((body, dict(self.headers)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Receive)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        event_type = f"py.sdk.{int(time.time() * 1000)}"
        endpoint = client.create_endpoint(f"http://127.0.0.1:{server.server_port}/hook",
                                          event_types=[event_type])
        client.publish_event(event_type, {"order": 7})
        deadline = time.monotonic() + 20
        while not received:
            assert time.monotonic() < deadline, "the webhook arrives"
            time.sleep(0.1)
    finally:
        server.shutdown()
    body, headers = received[0]
    event = verify_webhook(body, headers, endpoint["secret"])
    assert event["type"] == event_type
    assert event["data"] == {"order": 7}
    with pytest.raises(WebhookVerificationError):
        verify_webhook(body.replace(b"7", b"8"), headers, endpoint["secret"])
