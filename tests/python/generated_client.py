"""Drives Conveyor through a client that openapi-python-client generated from the served
document, with no hand edits (tests/e2e/python_client.rs generates it and runs this).

    python generated_client.py <base url> <api key>

Submits a job, long-polls it to `succeeded`, pages through the jobs list, and reads a 422's
field errors: every call goes through the generated, typed functions and models.
"""

import sys

from conveyor_client import AuthenticatedClient
from conveyor_client.api.jobs import get_job, list_jobs, submit_job
from conveyor_client.models import Job, JobPage, JobStatus, Problem, SubmitJob
from conveyor_client.types import UNSET


def main(base_url: str, key: str) -> None:
    client = AuthenticatedClient(base_url=base_url, token=key, timeout=90)

    # Submit, then long-poll until it is done.
    submitted = submit_job.sync(client=client, body=SubmitJob(type_="echo"))
    assert isinstance(submitted, Job), submitted
    job = submitted
    for _ in range(10):
        job = get_job.sync(id=submitted.id, client=client, wait=30)
        assert isinstance(job, Job), job
        if job.status == JobStatus.SUCCEEDED:
            break
    assert job.status == JobStatus.SUCCEEDED, job.status
    print("succeeded", job.id)

    # Three more, then page through them two at a time.
    ids = {submitted.id}
    for n in range(3):
        more = submit_job.sync(client=client, body=SubmitJob(type_="echo", priority=n))
        assert isinstance(more, Job), more
        ids.add(more.id)
    seen, cursor, pages = [], UNSET, 0
    while True:
        page = list_jobs.sync(client=client, limit=2, cursor=cursor)
        assert isinstance(page, JobPage), page
        assert all(isinstance(j, Job) for j in page.data)
        seen.extend(j.id for j in page.data)
        pages += 1
        if not page.next_cursor:
            break
        cursor = page.next_cursor
    assert set(seen) == ids and len(seen) == len(ids), (seen, ids)
    assert pages >= 2, pages
    print("paged", len(seen), "jobs in", pages, "pages")

    # A type this deployment does not run: a 422 naming the field.
    refused = submit_job.sync_detailed(
        client=client, body=SubmitJob(type_="no-such-type", max_attempts=0)
    )
    assert refused.status_code == 422, refused
    problem = refused.parsed
    assert isinstance(problem, Problem), problem
    fields = sorted(e.field for e in problem.errors)
    assert fields == ["max_attempts"], fields
    print("refused", [(e.field, e.message) for e in problem.errors])


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
