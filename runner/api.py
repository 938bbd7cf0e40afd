"""Wire format of the runner's HTTP API (pydantic models) and its OpenAPI document."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from common.schemas import AppliedDelegate, Conditions, Delegate, DeviceInfo, Memory, Timings

API_VERSION = "v1"
JobState = Literal["queued", "running", "succeeded", "failed"]
JOB_STATES: tuple[str, ...] = ("queued", "running", "succeeded", "failed")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class JobRequest(_Strict):
    """POST /v1/jobs body: what to run where."""

    model_url: str = Field(description="http(s):// URL (e.g. presigned S3) or file:// path of the .tflite")
    model_sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="the model is refused if its bytes hash differently")
    device: str = Field(min_length=1, description="a device id from GET /v1/devices")
    delegate: Delegate = "cpu"
    num_threads: int = Field(default=2, ge=1, le=64)
    warmup_runs: int = Field(default=5, ge=0, le=100_000)
    num_runs: int = Field(default=50, ge=1, le=10_000_000)
    client_key: str = Field(
        default="", max_length=200,
        description="free text that is part of the job's identity (e.g. the pipeline run id): the same "
                    "request with the same key is the same job; a new key asks for a fresh measurement",
    )

    def identity(self) -> dict[str, Any]:
        """What makes two requests the same job.

        model_url is left out on purpose: a presigned URL changes on every call while the
        model it points at (fixed by sha256) does not, and a retried submission must find
        the job it already created.
        """
        return self.model_dump(exclude={"model_url"})


class JobResult(_Strict):
    """What a succeeded job measured; milliseconds and megabytes."""

    device: DeviceInfo
    delegate_requested: Delegate
    delegate_applied: AppliedDelegate | None = Field(
        default=None, description="what actually ran the graph ('partial': the delegate and the CPU); "
                                  "None when the log does not say")
    timings_ms: Timings | None = None
    partial_timings_ms: dict[str, float | int | None] | None = Field(
        default=None, description="timings the tool printed when they do not fill a full Timings record")
    samples_ms: list[float] = Field(default_factory=list)
    memory: Memory | None = None
    conditions: Conditions | None = Field(default=None, description="how the measurement was taken")
    notes: list[str] = Field(default_factory=list, description="delegate messages and other facts from the tool's log")
    log_tail: str = ""


class JobView(_Strict):
    """GET /v1/jobs/{id} and POST /v1/jobs response."""

    id: str
    state: JobState
    request: JobRequest
    attempts: int = Field(description="how many times a worker has started this job")
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    result: JobResult | None = None
    error: str | None = None


class DevicesResponse(_Strict):
    backend: str
    devices: list[DeviceInfo]


class Health(_Strict):
    status: Literal["ok"] = "ok"
    backend: str
    version: str
    queued: int
    running: int


class ErrorBody(_Strict):
    error: Literal["bad_request", "unauthorized", "not_found", "method_not_allowed", "unprocessable", "internal"]
    detail: str


def openapi_document(server_url: str | None = None) -> dict[str, Any]:
    """OpenAPI 3.1 description of the API, with schemas generated from the models above."""
    models = {m.__name__: m for m in (JobRequest, JobView, JobResult, DevicesResponse, Health, ErrorBody)}
    schemas: dict[str, Any] = {}
    for name, model in models.items():
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for sub_name, sub in schema.pop("$defs", {}).items():
            schemas[sub_name] = sub
        schemas[name] = schema

    def ref(name: str) -> dict[str, Any]:
        return {"$ref": f"#/components/schemas/{name}"}

    def resp(desc: str, name: str) -> dict[str, Any]:
        return {"description": desc, "content": {"application/json": {"schema": ref(name)}}}

    err = {"401": resp("missing or wrong bearer token", "ErrorBody")}
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "scenebench device-farm runner", "version": API_VERSION,
                 "description": "Runs .tflite models on attached iPhones (backend ios) or on the runner's "
                                "own CPU (backend host), one job per device at a time."},
        "components": {"schemas": schemas,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
        "paths": {
            "/v1/health": {"get": {"summary": "Liveness; needs no token", "security": [],
                                   "responses": {"200": resp("alive", "Health")}}},
            "/v1/devices": {"get": {"summary": "Devices this runner can run on",
                                    "responses": {"200": resp("devices", "DevicesResponse"), **err}}},
            "/v1/jobs": {"post": {
                "summary": "Submit a job; the same request again returns the same job",
                "requestBody": {"required": True, "content": {"application/json": {"schema": ref("JobRequest")}}},
                "responses": {"202": resp("accepted (new or existing job)", "JobView"),
                              "400": resp("body is not JSON", "ErrorBody"),
                              "404": resp("unknown device", "ErrorBody"),
                              "422": resp("invalid request or a delegate the device lacks", "ErrorBody"), **err}}},
            "/v1/jobs/{job_id}": {"get": {
                "summary": "State of a job, with its result or error",
                "parameters": [{"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": resp("the job", "JobView"), "404": resp("no such job", "ErrorBody"), **err}}},
        },
    }
    if server_url:
        doc["servers"] = [{"url": server_url}]
    return doc
