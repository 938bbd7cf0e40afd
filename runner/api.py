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

    model_url: str = Field(description="http(s):// URL (e.g. presigned S3) of the .tflite, or a file:// URL "
                                       "inside the runner's --model-dir (refused when it has none)")
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
    interrupted: int = Field(
        default=0, description="attempts since the job was last submitted that a runner stop cut short; "
                               "at the runner's --max-attempts the job fails instead of running again")
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


ErrorCode = Literal["bad_request", "unauthorized", "not_found", "method_not_allowed", "request_timeout",
                   "length_required", "payload_too_large", "uri_too_long", "unprocessable", "headers_too_large",
                   "internal", "not_implemented", "unavailable"]
# Every status the server answers with, and its code in ErrorBody: one table for the handler and the document.
ERROR_CODES: dict[int, ErrorCode] = {
    400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed", 408: "request_timeout",
    411: "length_required", 413: "payload_too_large", 414: "uri_too_long", 422: "unprocessable",
    431: "headers_too_large", 500: "internal", 501: "not_implemented", 503: "unavailable",
}


class ErrorBody(_Strict):
    error: ErrorCode
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

    def errors(*codes: int) -> dict[str, Any]:
        return {str(c): {"$ref": f"#/components/responses/E{c}"} for c in sorted(codes)}

    # What any request can get before its route runs (framing, size, time, capacity), and 500.
    common = (400, 408, 414, 431, 500, 503)
    error_descriptions = {
        400: "malformed request: bad request line or headers, a Content-Length that is not one non-negative "
             "integer, or a body that is not JSON",
        401: "missing or wrong bearer token",
        404: "no such route, device or job",
        408: "the request did not arrive completely within the runner's --http-timeout-s; the connection is closed",
        411: "a body sent without Content-Length (chunked transfer encoding is not accepted)",
        413: "the body is larger than the runner accepts",
        414: "request line too long",
        422: "invalid request, or a delegate the device lacks",
        431: "too many or too long header lines",
        500: "the runner failed (e.g. it cannot list its devices)",
        503: "the runner already holds --max-connections connections; retry later (see Retry-After)",
    }
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "scenebench device-farm runner", "version": API_VERSION,
                 "description": "Runs .tflite models on attached iPhones (backend ios) or on the runner's "
                                "own CPU (backend host), one job per device at a time."},
        "components": {"schemas": schemas,
                       "responses": {f"E{c}": resp(d, "ErrorBody") for c, d in error_descriptions.items()},
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
        "paths": {
            "/v1/health": {"get": {"summary": "Liveness; needs no token", "security": [],
                                   "responses": {"200": resp("alive", "Health"), **errors(*common)}}},
            "/v1/devices": {"get": {"summary": "Devices this runner can run on",
                                    "responses": {"200": resp("devices", "DevicesResponse"),
                                                  **errors(*common, 401)}}},
            "/v1/jobs": {"post": {
                "summary": "Submit a job; the same request again returns the same job",
                "requestBody": {"required": True, "content": {"application/json": {"schema": ref("JobRequest")}}},
                "responses": {"202": resp("accepted (new or existing job)", "JobView"),
                              **errors(*common, 401, 404, 411, 413, 422)}}},
            "/v1/jobs/{job_id}": {"get": {
                "summary": "State of a job, with its result or error",
                "parameters": [{"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": resp("the job", "JobView"), **errors(*common, 401, 404)}}},
        },
    }
    if server_url:
        doc["servers"] = [{"url": server_url}]
    return doc
