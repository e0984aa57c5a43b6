"""A client of Conveyor's HTTP API, written by hand on httpx: one method per operation of
`/openapi.json` that an application or a worker uses, named after its operation id. Bodies
and answers are the JSON the document describes, as dicts.

Every error the API answers is raised as :class:`ApiError` with its problem+json fields
(`status`, `title`, `detail`, and `errors` naming each bad field of a 422).
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Optional
from urllib.parse import quote

import httpx

Json = Dict[str, Any]

# Past the longest hold the API promises (a long-poll or a lease wait, 60 s), with room for
# the request itself.
DEFAULT_TIMEOUT = httpx.Timeout(90.0, connect=10.0)


class ApiError(Exception):
    """A refusal from the API, as its problem+json body says it."""

    def __init__(self, status: int, problem: Json):
        self.status = status
        self.problem = problem
        self.title = problem.get("title", "")
        self.detail = problem.get("detail", "")
        #: ``[{"field": ..., "message": ...}]`` for a 422.
        self.errors: List[Json] = problem.get("errors") or []
        super().__init__(f"{status} {self.title}: {self.detail}")

    def fields(self) -> List[str]:
        """The fields a 422 names."""
        return [e.get("field", "") for e in self.errors]


def _answer(resp: httpx.Response) -> Any:
    if resp.status_code == 204:
        return None
    try:
        body = resp.json()
    except ValueError:
        body = {"title": resp.reason_phrase, "detail": resp.text[:500]}
    if resp.is_success:
        return body
    raise ApiError(resp.status_code, body if isinstance(body, dict) else {"detail": str(body)})


def _segment(name: str) -> str:
    return quote(name, safe="")


def _submission(job_type: str, payload: Any, options: Json) -> Json:
    body: Json = {"type": job_type}
    if payload is not None:
        body["payload"] = payload
    body.update({k: v for k, v in options.items() if v is not None})
    return body


class _Operations:
    """The operations, as (method, path, body, params) for a transport to send."""

    @staticmethod
    def submit_job(job_type: str, payload: Any, options: Json):
        key = options.pop("idempotency_key", None)
        headers = {"Idempotency-Key": key} if key else None
        return "POST", "/v1/jobs", _submission(job_type, payload, options), None, headers


class Client:
    """Conveyor at `base_url`, with one API key. Thread-safe; close it (or use ``with``)."""

    def __init__(self, base_url: str, key: str, *, timeout: httpx.Timeout = DEFAULT_TIMEOUT,
                 http: Optional[httpx.Client] = None):
        self.base_url = base_url.rstrip("/")
        self._http = http or httpx.Client(timeout=timeout)
        self._headers = {"Authorization": f"Bearer {key}"}

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, body: Any = None, params: Optional[Json] = None,
              headers: Optional[Json] = None) -> Any:
        resp = self._http.request(
            method, self.base_url + path, json=body, params=params,
            headers={**self._headers, **(headers or {})},
        )
        return _answer(resp)

    # Jobs

    def submit_job(self, job_type: str, payload: Any = None, **options: Any) -> Json:
        """Submits a job; `options` are the other fields of ``SubmitJob`` (``queue``,
        ``priority``, ``run_at``, ``delay_seconds``, ``max_attempts``, ``timeout_seconds``,
        ``callback_url``, ``metadata``) and ``idempotency_key`` (sent as the header)."""
        return self._call(*_Operations.submit_job(job_type, payload, dict(options)))

    def submit_job_batch(self, jobs: List[Json]) -> List[Json]:
        return self._call("POST", "/v1/jobs/batch", {"jobs": jobs})["jobs"]

    def get_job(self, job_id: str, *, wait: Optional[int] = None) -> Json:
        """The job; with `wait` (seconds, at most 60), held until it finishes or the wait is over."""
        params = {"wait": wait} if wait else None
        return self._call("GET", f"/v1/jobs/{job_id}", params=params)

    def wait_for_job(self, job_id: str, *, timeout: float = 300) -> Json:
        """Long-polls until the job is `succeeded`, `dead` or `cancelled`, or `timeout` passes."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            job = self.get_job(job_id, wait=max(1, min(60, int(left))))
            if job["status"] in ("succeeded", "dead", "cancelled") or left <= 0:
                return job

    def list_jobs(self, **query: Any) -> Json:
        """One page: ``{"data": [...], "next_cursor": ...}``; `query`: ``status``, ``queue``,
        ``type``, ``limit``, ``cursor``, ``include``."""
        return self._call("GET", "/v1/jobs", params={k: v for k, v in query.items() if v is not None})

    def iter_jobs(self, **query: Any) -> Iterator[Json]:
        """Every job the query matches, page after page."""
        while True:
            page = self.list_jobs(**query)
            yield from page["data"]
            if not page.get("next_cursor"):
                return
            query["cursor"] = page["next_cursor"]

    def list_job_attempts(self, job_id: str) -> List[Json]:
        return self._call("GET", f"/v1/jobs/{job_id}/attempts")["data"]

    def cancel_job(self, job_id: str) -> Json:
        return self._call("POST", f"/v1/jobs/{job_id}/cancel")

    def replay_job(self, job_id: str, *, payload: Any = None) -> Json:
        body = {"payload": payload} if payload is not None else {}
        return self._call("POST", f"/v1/jobs/{job_id}/replay", body)

    # Events and webhooks

    def publish_event(self, event_type: str, payload: Any) -> Json:
        """Publishes an event; subscribed endpoints receive ``{"type", "timestamp", "data"}``
        with `payload` as its data."""
        return self._call("POST", "/v1/events", {"type": event_type, "payload": payload})

    def create_endpoint(self, url: str, **options: Any) -> Json:
        return self._call("POST", "/v1/endpoints", {"url": url, **options})

    # Job types and workers

    def declare_job_type(self, name: str, **spec: Any) -> Json:
        """Declares (or changes) a job type for remote workers; `spec`: ``payload_schema``,
        ``queue``, ``max_attempts``, ``timeout_seconds``, ``concurrency_limit``."""
        body = {k: v for k, v in spec.items() if v is not None}
        return self._call("PUT", f"/v1/job-types/{_segment(name)}", body)

    def list_job_types(self) -> List[Json]:
        return self._call("GET", "/v1/job-types")["data"]

    def delete_job_type(self, name: str) -> None:
        self._call("DELETE", f"/v1/job-types/{_segment(name)}")

    def list_workers(self) -> List[Json]:
        return self._call("GET", "/v1/workers")["data"]


class AsyncClient:
    """The same, on asyncio: what :class:`conveyor.Worker` speaks."""

    def __init__(self, base_url: str, key: str, *, timeout: httpx.Timeout = DEFAULT_TIMEOUT,
                 http: Optional[httpx.AsyncClient] = None):
        self.base_url = base_url.rstrip("/")
        self._http = http or httpx.AsyncClient(timeout=timeout)
        self._headers = {"Authorization": f"Bearer {key}"}

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, body: Any = None,
                    params: Optional[Json] = None, headers: Optional[Json] = None) -> Any:
        resp = await self._http.request(
            method, self.base_url + path, json=body, params=params,
            headers={**self._headers, **(headers or {})},
        )
        return _answer(resp)

    async def submit_job(self, job_type: str, payload: Any = None, **options: Any) -> Json:
        return await self._call(*_Operations.submit_job(job_type, payload, dict(options)))

    async def get_job(self, job_id: str, *, wait: Optional[int] = None) -> Json:
        params = {"wait": wait} if wait else None
        return await self._call("GET", f"/v1/jobs/{job_id}", params=params)

    async def declare_job_type(self, name: str, **spec: Any) -> Json:
        body = {k: v for k, v in spec.items() if v is not None}
        return await self._call("PUT", f"/v1/job-types/{_segment(name)}", body)

    # The lease protocol.

    async def lease_jobs(self, *, worker: str, types: List[str], max: int = 1,
                         wait_seconds: int = 0, lease_seconds: int = 60,
                         queues: Optional[List[str]] = None) -> List[Json]:
        body: Json = {"worker": worker, "types": types, "max": max,
                      "wait_seconds": wait_seconds, "lease_seconds": lease_seconds}
        if queues:
            body["queues"] = queues
        return (await self._call("POST", "/v1/workers/lease", body))["jobs"]

    async def heartbeat_job(self, job_id: str, lease_token: str, *, lease_seconds: int = 60) -> Json:
        return await self._call("POST", f"/v1/jobs/{job_id}/heartbeat",
                                {"lease_token": lease_token, "lease_seconds": lease_seconds})

    async def complete_job(self, job_id: str, lease_token: str, result: Any = None) -> Json:
        return await self._call("POST", f"/v1/jobs/{job_id}/complete",
                                {"lease_token": lease_token, "result": result})

    async def fail_job(self, job_id: str, lease_token: str, error: str, *,
                       retryable: bool = True) -> Json:
        return await self._call("POST", f"/v1/jobs/{job_id}/fail",
                                {"lease_token": lease_token, "error": error or "failed",
                                 "retryable": retryable})

    async def release_job(self, job_id: str, lease_token: str) -> Json:
        return await self._call("POST", f"/v1/jobs/{job_id}/release", {"lease_token": lease_token})
