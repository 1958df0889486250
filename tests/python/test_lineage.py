"""OpenLineage intake with the real `openlineage-python` client: its HTTP transport (API-key
bearer auth, gzip compression) emits START and COMPLETE run events with input and output
datasets to a real `plinth serve`; the graph and the run's events are then read back through
Plinth's own API."""

import datetime
import urllib.parse
import uuid

import pytest
import requests
from openlineage.client import OpenLineageClient
from openlineage.client.event_v2 import (
    InputDataset,
    Job,
    OutputDataset,
    Run,
    RunEvent,
    RunState,
    StaticDataset,
    DatasetEvent,
)
from openlineage.client.facet_v2 import parent_run, schema_dataset, sql_job
from openlineage.client.transport.http import HttpCompression, HttpConfig, HttpTransport

PRODUCER = "https://example.com/plinth-python-tests"


@pytest.fixture(scope="module")
def server(plinth_server):
    return plinth_server


def token_of(server, role, team="research"):
    """A new token of `role` in `team` (the team is created when missing)."""
    server.apply_yaml(f"""
apiVersion: plinth/v1
kind: Team
metadata: {{name: {team}}}
spec: {{displayName: {team}}}
""")
    status, body = server.request("POST", "/api/v1/tokens",
                                  {"name": f"ol-{team}-{role}", "team": team, "role": role})
    assert status == 201, body
    return body["token"]


class RecordingSession(requests.Session):
    """A plain requests session that notes the headers of what the transport sends."""

    def __init__(self):
        super().__init__()
        self.sent = []

    def send(self, request, **kwargs):
        self.sent.append(dict(request.headers))
        return super().send(request, **kwargs)


def http_client(server, token, session=None):
    """The client as code builds it: HttpTransport with an HttpConfig."""
    config = HttpConfig.from_dict({
        "url": server.url,
        "endpoint": "api/v1/lineage",
        "auth": {"type": "api_key", "apiKey": token},
        "compression": "gzip",
        "retry": {"total": 0},
    })
    assert config.compression == HttpCompression.GZIP
    config.session = session
    return OpenLineageClient(transport=HttpTransport(config))


def configured_client(server, token):
    """The client as an openlineage.yml configures it (the same dictionary)."""
    return OpenLineageClient(config={"transport": {
        "type": "http", "url": server.url, "endpoint": "api/v1/lineage",
        "auth": {"type": "api_key", "apiKey": token}, "compression": "gzip",
        "retry": {"total": 0},
    }})


def now(offset_s=0):
    t = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=offset_s)
    return t.isoformat()


def graph(server, node, direction="both", depth=10):
    q = urllib.parse.urlencode({"node": node, "direction": direction, "depth": depth})
    status, body = server.request("GET", f"/api/v1/lineage/graph?{q}")
    assert status == 200, body
    return body


def by_key(g):
    return {n["key"]: n for n in g["nodes"]}


def test_start_and_complete_events_from_the_real_client(server):
    token = token_of(server, "member")
    session = RecordingSession()
    client = http_client(server, token, session)
    run_id = str(uuid.uuid4())
    parent_id = str(uuid.uuid4())
    job = Job(namespace="airflow", name="nightly.train",
              facets={"sql": sql_job.SQLJobFacet(query="select * from flights")})
    inputs = [InputDataset(
        namespace="postgres://db:5432", name="public.flights",
        facets={"schema": schema_dataset.SchemaDatasetFacet(fields=[
            schema_dataset.SchemaDatasetFacetFields(name="dep_delay", type="INT"),
            schema_dataset.SchemaDatasetFacetFields(name="origin", type="TEXT"),
        ])})]
    outputs = [OutputDataset(namespace="s3://models", name="delay/model.pkl")]
    run = Run(runId=run_id, facets={"parent": parent_run.ParentRunFacet(
        run=parent_run.Run(runId=parent_id),
        job=parent_run.Job(namespace="airflow", name="nightly"))})

    client.emit(RunEvent(eventType=RunState.START, eventTime=now(), run=run, job=job,
                         producer=PRODUCER, inputs=inputs, outputs=[]))
    client.emit(RunEvent(eventType=RunState.COMPLETE, eventTime=now(1), run=run, job=job,
                         producer=PRODUCER, inputs=inputs, outputs=outputs))

    # Both went gzipped, with the token as a bearer, to the transport's default endpoint.
    assert len(session.sent) == 2
    for headers in session.sent:
        assert headers["Content-Encoding"] == "gzip"
        assert headers["Authorization"] == f"Bearer {token}"

    # The run: COMPLETE, its job and input upstream, its output downstream, its parent run.
    g = graph(server, f"run:{run_id}", depth=1)
    nodes = by_key(g)
    assert nodes[f"run:{run_id}"]["state"] == "COMPLETE"
    assert nodes[f"run:{run_id}"]["layer"] == 0
    assert nodes["dataset:postgres://db:5432/public.flights"]["layer"] == -1
    assert nodes["job:airflow/nightly.train"]["layer"] == -1
    assert nodes[f"run:{parent_id}"]["layer"] == -1
    assert nodes["dataset:s3://models/delay/model.pkl"]["layer"] == 1
    edges = {(e["from"], e["to"], e["kind"]) for e in g["edges"]}
    assert ("dataset:postgres://db:5432/public.flights", f"run:{run_id}", "input") in edges
    assert (f"run:{run_id}", "dataset:s3://models/delay/model.pkl", "output") in edges
    assert ("job:airflow/nightly.train", f"run:{run_id}", "job") in edges
    assert (f"run:{parent_id}", f"run:{run_id}", "parent") in edges

    # Facets arrive as the client serialized them.
    flights = nodes["dataset:postgres://db:5432/public.flights"]
    assert [f["name"] for f in flights["facets"]["schema"]["fields"]] == ["dep_delay", "origin"]
    assert flights["facets"]["schema"]["_schemaURL"].endswith("#/$defs/SchemaDatasetFacet")
    assert nodes["job:airflow/nightly.train"]["facets"]["sql"]["query"] == "select * from flights"

    # Upstream of the model file at depth 2 reaches the input through the run, nothing else
    # downstream.
    up = graph(server, "dataset:s3://models/delay/model.pkl", direction="up", depth=2)
    assert "dataset:postgres://db:5432/public.flights" in by_key(up)
    assert all(n["layer"] <= 0 for n in up["nodes"])

    # The run's events, as the client sent them, under the member token.
    status, events = server.request("GET", f"/api/v1/lineage/runs/{run_id}")
    assert status == 200, events
    assert events["job"] == "job:airflow/nightly.train"
    assert [e["eventType"] for e in events["events"]] == ["START", "COMPLETE"]
    assert all("ol-research-member" in e["receivedBy"] for e in events["events"])
    sent = events["events"][1]["event"]
    assert sent["producer"] == PRODUCER
    assert sent["schemaURL"].endswith("#/$defs/RunEvent")
    assert sent["outputs"][0]["name"] == "delay/model.pkl"

    # Emitting the same event again is accepted (200) and changes nothing.
    client.emit(RunEvent(eventType=RunState.START, eventTime=events["events"][0]["event"]["eventTime"],
                         run=run, job=job, producer=PRODUCER, inputs=inputs))
    status, again = server.request("GET", f"/api/v1/lineage/runs/{run_id}")
    assert len(again["events"]) == 2


def test_config_dict_client_dataset_events_and_auth(server):
    token = token_of(server, "maintainer")
    client = configured_client(server, token)
    assert client.transport.kind == "http"
    client.emit(DatasetEvent(eventTime=now(), producer=PRODUCER, dataset=StaticDataset(
        namespace="file", name="/data/flights.parquet",
        facets={"schema": schema_dataset.SchemaDatasetFacet(fields=[
            schema_dataset.SchemaDatasetFacetFields(name="year", type="INT")])})))
    g = graph(server, "dataset:file//data/flights.parquet", depth=0)
    assert g["nodes"][0]["facets"]["schema"]["fields"][0]["name"] == "year"

    run = Run(runId=str(uuid.uuid4()))
    job = Job(namespace="ns", name="j")
    event = RunEvent(eventType=RunState.START, eventTime=now(), run=run, job=job, producer=PRODUCER)

    # A viewer may read but not write; a wrong key is refused: the client raises.
    viewer = http_client(server, token_of(server, "viewer"))
    with pytest.raises(requests.HTTPError) as e:
        viewer.emit(event)
    assert e.value.response.status_code == 403
    with pytest.raises(requests.HTTPError) as e:
        http_client(server, "plt_000000000000_" + "0" * 64).emit(event)
    assert e.value.response.status_code == 401
    status, _ = server.request("GET", f"/api/v1/lineage/runs/{run.runId}")
    assert status == 404
