"""The wire format of the Open Inference Protocol, as pydantic models (KServe's `v2_datamodels`).

Reference: KServe's `docs/predict-api/v2/rest_predict_v2.yaml`, and Triton's binary tensor data
extension (`binary_data_size`, `binary_data`, `binary_data_output` parameters) and classification
extension (`classification` output parameter).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, StrictBool, StrictFloat, StrictInt

# Strict members first: JSON `true` stays a bool and `3` an int instead of being coerced to a string.
InferParameter = StrictBool | StrictInt | StrictFloat | str
Parameters = dict[str, InferParameter]


class ProtocolErrorResponse(BaseModel):
    """Every /v2 failure: a 4xx or 5xx with this body (the protocol's shape, not /v1's)."""

    error: str


class ServerLiveResponse(BaseModel):
    live: bool


class ServerReadyResponse(BaseModel):
    ready: bool


class ModelReadyResponse(BaseModel):
    name: str
    ready: bool


class ServerMetadataResponse(BaseModel):
    name: str
    version: str
    extensions: list[str]


class MetadataTensor(BaseModel):
    name: str
    datatype: str = Field(description="UINT8, FP32, INT64, BYTES, ...")
    shape: list[int] = Field(description="-1 marks a variable dimension (the batch)")


class ModelMetadataResponse(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]


class RequestInput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: Parameters | None = Field(
        None, description="`binary_data_size`: bytes of this tensor after the JSON header"
    )
    data: list[Any] | None = Field(None, description="row-major values, flat or nested")


class RequestOutput(BaseModel):
    name: str
    parameters: Parameters | None = Field(
        None, description="`binary_data` (bool): answer in binary; `classification` (int): top-k strings"
    )


class InferenceRequest(BaseModel):
    id: str | None = None
    parameters: Parameters | None = Field(
        None,
        description="`binary_data_output` (bool): outputs in binary by default; `timeout` (µs): "
        "a shorter deadline than REQUEST_TIMEOUT_MS",
    )
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = Field(None, description="default: every output of the model")


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: Parameters | None = Field(None, description="`binary_data_size` when sent in binary")
    data: Any = Field(None, description="row-major flat values when sent as JSON")


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: Parameters | None = None
    outputs: list[ResponseOutput]


# -- Triton's statistics and model repository extensions --------------------------------------------


class StatisticDuration(BaseModel):
    count: int = Field(description="how many")
    ns: int = Field(description="their cumulative duration, nanoseconds")


class InferStatistics(BaseModel):
    success: StatisticDuration = Field(description="requests answered, from arrival to answer")
    fail: StatisticDuration
    queue: StatisticDuration = Field(description="time waiting for a batch")
    compute_input: StatisticDuration
    compute_infer: StatisticDuration = Field(description="session.run, counted for each request of a batch")
    compute_output: StatisticDuration
    cache_hit: StatisticDuration
    cache_miss: StatisticDuration


class InferBatchStatistics(BaseModel):
    batch_size: int
    compute_input: StatisticDuration
    compute_infer: StatisticDuration = Field(description="executions of this batch size and their time")
    compute_output: StatisticDuration


class ModelStatistics(BaseModel):
    name: str
    version: str
    last_inference: int = Field(description="milliseconds since the epoch; 0 before the first")
    inference_count: int = Field(description="rows inferred (a batch of n counts n)")
    execution_count: int = Field(description="session.run calls")
    inference_stats: InferStatistics
    batch_stats: list[InferBatchStatistics]
    memory_usage: list[dict[str, Any]]


class ModelStatisticsResponse(BaseModel):
    model_stats: list[ModelStatistics]


class RepositoryIndexRequest(BaseModel):
    repository_name: str = ""
    ready: bool = Field(False, description="list only the models ready to infer")


class RepositoryModel(BaseModel):
    name: str
    version: str
    state: str = Field(description="READY, LOADING or UNAVAILABLE")
    reason: str = Field(description="why it is not ready (`unloaded` after an unload)")


class RepositoryModelRequest(BaseModel):
    """The optional body of a load or unload."""

    repository_name: str = ""
    parameters: dict[str, Any] | None = Field(
        None, description="Triton's `config`/`file:` overrides are refused: the card is the configuration"
    )
