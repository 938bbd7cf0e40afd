"""Pydantic models of every JSON document scenebench writes; each carries schema_version.

Models reject unknown keys so that a reader notices a document from a newer writer
instead of silently dropping fields. Bump SCHEMA_VERSION on incompatible changes.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = "1"

Format = Literal["float32", "int8", "float16", "dynamic", "int8-selective", "int16x8", "int8-qat"]
FORMATS: tuple[str, ...] = ("float32", "int8", "float16", "dynamic", "int8-selective", "int16x8", "int8-qat")
# Formats calibrated on training images (integer activations); the debugger diagnoses them.
INTEGER_FORMATS: tuple[str, ...] = ("int8", "int8-selective", "int16x8", "int8-qat")
Delegate = Literal["cpu", "gpu", "coreml"]
DELEGATES: tuple[str, ...] = ("cpu", "gpu", "coreml")
# What ran the graph: a delegate, or "partial" when the requested delegate took only part of the
# graph and the CPU ran the rest (the tool's "partially executed", or fewer nodes than the graph has).
AppliedDelegate = Literal["cpu", "gpu", "coreml", "partial"]
ThermalState = Literal["nominal", "fair", "serious", "critical"]
THERMAL_STATES: tuple[str, ...] = ("nominal", "fair", "serious", "critical")
Backend = Literal["host", "ios"]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class Versioned(Doc):
    schema_version: str = SCHEMA_VERSION


class ArtifactRef(Doc):
    """Where a binary artifact lives in the store and what it must hash to."""

    key: str
    sha256: str
    size: int


class ReusedFrom(Doc):
    """A step result this run took from an earlier run with the same inputs (common.stepcache)."""

    run_id: str = Field(description="the run that computed the result")
    document: str = Field(description="store key of that run's own document")
    cache_entry: str = Field(description="store key of the cache entry that pointed at it")


# ---------------------------------------------------------------- dataset.json
class ClassInfo(Doc):
    index: int
    name: str
    folder: str


class ShardRef(ArtifactRef):
    count: int


class SplitInfo(Doc):
    count: int
    per_class: dict[str, int]
    shards: list[ShardRef] = Field(default_factory=list)


class SkippedFile(Doc):
    path: str
    reason: str


class DatasetManifest(Versioned):
    kind: Literal["dataset"] = "dataset"
    fingerprint: str
    source: str
    synthetic: bool = False
    layout: Literal["split-folders", "class-folders"]
    numbered: bool
    split_method: Literal["folders", "stratified-holdout"]
    val_fraction: float | None = None
    seed: int
    classes: list[ClassInfo]
    splits: dict[str, SplitInfo]
    skipped: list[SkippedFile] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list, description="kept, but worth a look (e.g. copies inside validation)")
    image_size_range: dict[str, list[int]] = Field(
        default_factory=dict, description="min/max of [height, width] over kept images, as stored"
    )
    max_side: int = Field(default=0, description="photos longer than this were stored downscaled to it (0: no limit)")
    downscaled: int = Field(default=0, description="how many photos were stored downscaled")
    code_version: str
    created_at: datetime = Field(default_factory=utcnow)


# ---------------------------------------------------------------- run.json
class RunParams(Doc):
    data: str
    archs: list[str]
    formats: list[str]
    image_size: list[int]
    epochs: int
    weights: str
    batch_size: int | None = None
    seed: int = 0
    runner_url: str | None = None
    c: float = 1.0
    extra: dict[str, str] = Field(default_factory=dict)


class RunManifest(Versioned):
    kind: Literal["run"] = "run"
    run_id: str
    created_at: datetime = Field(default_factory=utcnow)
    code_version: str
    image: str | None = None
    image_digest: str | None = Field(default=None, description="the image the pod ran, as the container runtime "
                                                                  "resolved it (pod status imageID)")
    trigger: str = "manual"
    params: RunParams
    dataset_fingerprint: str
    dataset_synthetic: bool = False


# ---------------------------------------------------------------- train.json
class EpochRecord(Doc):
    epoch: int
    phase: Literal["head", "full"]
    learning_rate: float
    loss: float
    top1: float
    top3: float
    val_loss: float
    val_top1: float
    val_top3: float
    seconds: float
    images_per_s: float


class Hardware(Doc):
    cpu: str
    cpu_count: int
    gpus: list[str] = Field(default_factory=list)
    mixed_precision: bool = False
    strategy: str = "default"
    replicas: int = 1


class TrainReport(Versioned):
    kind: Literal["train"] = "train"
    run_id: str
    arch: str
    weights: str
    image_size: list[int]
    num_classes: int
    epochs: int
    batch_size: int
    recipe: dict[str, float | int | str | bool]
    history: list[EpochRecord]
    best_epoch: int
    best_val_top1: float
    best_val_top3: float
    last_val_top1: float
    last_val_top3: float
    images_per_s: float
    wall_time_s: float
    resumed_from_epoch: int | None = None
    hardware: Hardware
    model: ArtifactRef
    dataset_fingerprint: str
    cache_key: str
    reused_from: ReusedFrom | None = None
    tensorflow_version: str
    keras_version: str
    code_version: str
    created_at: datetime = Field(default_factory=utcnow)


# ---------------------------------------------------------------- convert.json
class Quantization(Doc):
    scale: float
    zero_point: int


class TensorInfo(Doc):
    name: str
    dtype: str
    shape: list[int]
    quantization: Quantization | None = None


class GpuOpIssue(Doc):
    op: str
    nodes: list[int] = Field(description="operator indices in the model's main subgraph")
    reason: str = Field(description="as the analyzer gives it")


class GpuCompatibility(Doc):
    """TensorFlow's model analyzer on the .tflite, checked against the GPU delegate's op rules."""

    compatible: bool
    ops: list[GpuOpIssue] = Field(default_factory=list, description="ops the GPU delegate cannot take")
    tool: str


class QatInfo(Doc):
    """int8-qat: the quantization-aware fine-tuning that preceded the conversion (common.qat)."""

    epochs: int
    steps: int
    batch_size: int
    learning_rate: float = Field(description="constant, the recipe's peak times common.qat.LR_FACTOR")
    optimizer: str
    ema_decay: float = Field(description="moving average of each batch's extremes that sets the ranges")
    fake_quant_layers: int = Field(description="activations fake-quantized in training; their ranges are the model's")
    observed_images: int = Field(description="calibration images that set the starting ranges")
    loss_by_epoch: list[float]
    seconds: float
    finetuned_float: ArtifactRef | None = Field(
        default=None, description="validation probabilities of the fine-tuned weights in float (fake quantization "
                                  "passed through): int8-qat's own float reference")
    finetuned_float_val_top1: float | None = Field(default=None, description="their top-1, percent")


class ConvertReport(Versioned):
    kind: Literal["convert"] = "convert"
    run_id: str
    arch: str
    format: Format
    model: ArtifactRef
    size_mb: float
    input: TensorInfo
    output: TensorInfo
    op_counts: dict[str, int]
    converter: str
    seconds: float
    calibration_samples: int = 0
    weights_quantization: Literal["per-channel", "per-tensor"] | None = Field(
        default=None, description="how integer weights are scaled, read from the file (None: float weights)")
    float_layers: list[str] = Field(
        default_factory=list, description="int8-selective: output tensors of the layers kept float, as the debugger named them")
    qat: QatInfo | None = Field(default=None, description="int8-qat: the fine-tuning with fake-quantized activations")
    tensors: int | None = Field(default=None, description="tensors in the model")
    dynamic_tensors: int | None = Field(default=None, description="tensors with -1 in their shape signature (must be 0)")
    gpu_compatibility: GpuCompatibility | None = None
    max_output_difference: float | None = Field(
        default=None, description="largest |TFLite - SavedModel| softmax output on seeded random photos")
    source_model_sha256: str
    cache_key: str
    reused_from: ReusedFrom | None = None
    code_version: str
    created_at: datetime = Field(default_factory=utcnow)


# ---------------------------------------------------------------- eval.json
class Interval(Doc):
    """A bootstrap interval over the validation images (common.stats), percent or points."""

    lo: float
    hi: float
    level: float = Field(default=0.95, description="confidence level")


class PairedTest(Doc):
    """Two models on the same images: the first's accuracy minus the second's, and whether it is real."""

    diff: float = Field(description="first minus second, percentage points")
    ci: Interval = Field(description="paired bootstrap interval of diff over the images")
    first_only: int = Field(description="images only the first model got right")
    second_only: int = Field(description="images only the second model got right")
    p_value: float = Field(description="exact McNemar test (two-sided binomial on the images only one got right)")


class PerImage(Doc):
    """Per-image correctness in validation order, so that later runs can be compared image by image.

    Hex of the packed bits (common.stats.pack): bit i is 1 when image i was right.
    """

    count: int
    top1: str
    top3: str


class TieRanges(Doc):
    """Accuracy over every order of tied classes (a uint8 softmax has 1/256 resolution).

    top1/top3 of the document break ties by class index; these give how far that choice moves them.
    """

    images: int = Field(description="images whose top-1 or top-3 decision rests on a tie")
    top1_images: int
    top3_images: int
    top1_min: float
    top1_max: float
    top3_min: float
    top3_max: float


class ClassAccuracy(Doc):
    index: int
    name: str
    count: int
    top1: float


class EvalReport(Versioned):
    kind: Literal["eval"] = "eval"
    run_id: str
    arch: str
    format: Format
    model_sha256: str
    count: int
    top1: float = Field(description="percent")
    top3: float = Field(description="percent")
    per_class: list[ClassAccuracy]
    confusion: list[list[int]] = Field(description="rows: true class, columns: predicted class")
    keras_top1: float | None = None
    keras_top3: float | None = None
    drop_top1: float | None = Field(default=None, description="Keras top-1 minus TFLite top-1, points")
    drop_top3: float | None = None
    agreement_with_keras: float | None = Field(default=None, description="percent of images whose top-1 label matches the Keras model")
    top1_ci: Interval | None = None
    top3_ci: Interval | None = None
    drop_top1_test: PairedTest | None = Field(default=None, description="Keras minus this model, paired on the images")
    drop_top3_test: PairedTest | None = None
    finetuned_float_top1: float | None = Field(
        default=None, description="int8-qat: top-1 of its fine-tuned weights in float (fake quantization passed "
                                  "through), percent")
    drop_top1_vs_finetuned_test: PairedTest | None = Field(
        default=None, description="int8-qat: its fine-tuned weights in float minus this model, paired on the images "
                                  "(what the conversion lost, apart from what the fine-tuning trained)")
    per_image: PerImage | None = None
    ties: TieRanges | None = None
    seconds: float
    cache_key: str
    reused_from: ReusedFrom | None = None
    code_version: str
    created_at: datetime = Field(default_factory=utcnow)


# ---------------------------------------------------------------- bench/<device>/<delegate>.json
class DeviceInfo(Doc):
    id: str = Field(description="path-safe, stable id, e.g. 'host-amd-epyc-7b13' or an iPhone UDID slug")
    name: str
    backend: Backend
    model: str = Field(description="iPhone model code (iPhone13,3) or the host CPU model")
    os: str
    delegates: list[Delegate] = Field(default_factory=lambda: ["cpu"])
    state: Literal["idle", "busy", "offline"] = "idle"
    state_reason: str = Field(default="", description="why a device is offline, and what to do about it")


class Timings(Doc):
    """Milliseconds."""

    init: float | None = None
    first: float | None = None
    warmup_mean: float | None = None
    mean: float
    std: float
    min: float
    max: float
    p50: float | None = Field(default=None, description="absent when the tool reports no per-run samples (iOS)")
    p90: float | None = Field(default=None, description="absent when the tool reports no per-run samples (iOS)")
    p99: float | None = None
    count: int


class Memory(Doc):
    """Megabytes."""

    init_mb: float | None = None
    overall_mb: float | None = None
    peak_mb: float | None = None
    method: str = ""


class PhoneState(Doc):
    """One reading of the phone's ProcessInfo and UIDevice, printed by the runner-ready app."""

    thermal: ThermalState | None = None
    low_power_mode: bool | None = None
    battery_level: float | None = Field(default=None, ge=0, le=1, description="0..1; None when iOS does not say")
    battery_state: Literal["unknown", "unplugged", "charging", "full"] | None = None


class Conditions(Doc):
    """How one measurement was taken, beyond its numbers; None where the tool or the phone did not say."""

    runs_requested: int | None = None
    runs_completed: int | None = Field(default=None, description="timed runs the tool made; fewer when max_secs stopped it")
    max_secs: float | None = Field(default=None, description="benchmark_model's own cap per phase, below the runner's kill")
    samples_source: str | None = Field(default=None, description="where samples_ms come from; None: no per-run samples")
    delegated_nodes: int | None = Field(default=None, description="graph nodes the requested delegate took")
    total_nodes: int | None = Field(default=None, description="graph nodes the delegate was offered")
    gpu_precision_loss_allowed: bool | None = Field(
        default=None, description="Metal ran with FP16 arithmetic allowed (benchmark_model's default)")
    coreml_compute_units: str | None = Field(
        default=None, description="what the Core ML delegate asks Core ML for; Core ML picks the unit itself")
    neural_engine: bool | None = Field(default=None, description="whether the phone has a Neural Engine (A12 and later)")
    state_before: PhoneState | None = None
    state_after: PhoneState | None = None
    thermal_wait_s: float | None = Field(default=None, description="how long the job waited for nominal thermal state")
    thermal_wait_limit_s: float | None = None
    cooldown_s: float | None = Field(default=None, description="pause before this job, after the previous delegate of the model")
    memory_pass: Literal["separate", "same", "none"] | None = Field(
        default=None, description="separate: memory measured in its own run, so its sampling thread cannot slow the timing")
    os_build: str | None = Field(default=None, description="the phone's iOS build number, e.g. 22B91")
    app_tf_tag: str | None = Field(default=None, description="TensorFlow tag the benchmark app was built from")
    app_build_id: str | None = Field(default=None, description="build id the app's build script stamped into it")

    @property
    def coverage(self) -> float | None:
        if self.delegated_nodes is None or not self.total_nodes:
            return None
        return self.delegated_nodes / self.total_nodes


def measurement_flags(c: Conditions | None, coverage_threshold: float = 0.9) -> list[str]:
    """What a reader must know before trusting a latency: partial delegation, heat, a cut-short run."""
    if c is None:
        return []
    flags = []
    cov = c.coverage
    if cov is not None and cov < coverage_threshold:
        flags.append(f"mostly on CPU: the delegate took {c.delegated_nodes} of {c.total_nodes} nodes ({cov:.0%})")
    if c.state_after is not None and c.state_after.thermal in ("serious", "critical"):
        flags.append(f"thermal state {c.state_after.thermal} at the end of the run")
    if c.runs_requested and c.runs_completed is not None and c.runs_completed < c.runs_requested:
        flags.append(f"fewer runs than requested: {c.runs_completed} of {c.runs_requested} "
                     f"(benchmark_model stopped at max_secs={c.max_secs:g} s)" if c.max_secs
                     else f"fewer runs than requested: {c.runs_completed} of {c.runs_requested}")
    if (c.thermal_wait_limit_s is not None and c.thermal_wait_s is not None and c.state_before is not None
            and c.state_before.thermal not in (None, "nominal")):
        flags.append(f"started {c.state_before.thermal}, not nominal, after waiting {c.thermal_wait_s:.0f} s")
    for when, st in (("before", c.state_before), ("after", c.state_after)):
        if st is not None and st.low_power_mode:
            flags.append(f"Low Power Mode on {when} the run")
            break
    return flags


class BenchResult(Versioned):
    kind: Literal["bench"] = "bench"
    run_id: str
    arch: str
    format: Format
    model_sha256: str
    device: DeviceInfo
    delegate_requested: Delegate
    delegate_applied: AppliedDelegate | None = None
    status: Literal["ok", "missing"]
    reason: str | None = None
    num_threads: int
    warmup_runs: int
    num_runs: int
    timings_ms: Timings | None = None
    samples_ms: list[float] = Field(default_factory=list)
    memory: Memory | None = None
    conditions: Conditions | None = None
    runner: str = Field(description="'in-process' or the runner URL")
    runner_job_id: str | None = None
    measured_at: datetime = Field(default_factory=utcnow)
    code_version: str


class BenchPlanItem(Doc):
    device: str
    delegate: Delegate


class BenchPlan(Versioned):
    """<arch>/<format>/bench-plan.json: what the runner listed when bench-plan asked, and the pairs planned.

    An empty plan says why in `reason`, so that results.json can say why a model has no latency.
    """

    kind: Literal["bench_plan"] = "bench_plan"
    run_id: str
    arch: str
    format: Format
    runner: str = Field(description="'in-process' or the runner URL")
    requested_devices: str
    requested_delegates: str
    devices: list[DeviceInfo] = Field(default_factory=list, description="what the runner listed")
    items: list[BenchPlanItem] = Field(default_factory=list)
    reason: str | None = Field(default=None, description="why the plan is empty")
    created_at: datetime = Field(default_factory=utcnow)


# ---------------------------------------------------------------- results.json
class LatencyEntry(Doc):
    device_id: str
    device_name: str
    device_model: str
    device_os: str
    backend: Backend
    delegate_requested: Delegate
    delegate_applied: AppliedDelegate | None = None
    status: Literal["ok", "missing"]
    reason: str | None = None
    mean_ms: float | None = None
    std_ms: float | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    count: int | None = Field(default=None, description="timed runs behind mean and std")
    init_ms: float | None = None
    peak_memory_mb: float | None = None
    score: float | None = None
    conditions: Conditions | None = None
    flags: list[str] = Field(default_factory=list, description="measurement_flags: partial delegation, heat, short runs")
    key: str = Field(description="store key of the full bench document")


class ModelResult(Doc):
    arch: str
    format: Format
    status: Literal["ok", "failed"] = "ok"
    reason: str | None = None
    size_mb: float | None = None
    sha256: str | None = None
    top1: float | None = None
    top3: float | None = None
    keras_top1: float | None = None
    drop_top1: float | None = None
    count: int | None = Field(default=None, description="validation images evaluated")
    top1_ci: Interval | None = None
    top3_ci: Interval | None = None
    drop_top1_test: PairedTest | None = Field(default=None, description="Keras minus this model, paired on the images")
    drop_top3_test: PairedTest | None = None
    per_image: PerImage | None = None
    ties: TieRanges | None = None
    dynamic_tensors: int | None = Field(default=None, description="from convert.json; 0 for every model we ship")
    gpu_compatibility: GpuCompatibility | None = None
    input_quantization: Quantization | None = Field(default=None, description="uint8 input scale/zero point (int8)")
    latency: list[LatencyEntry] = Field(default_factory=list)
    score: float | None = Field(default=None, description="MAI score on the score basis device/delegate")
    score_runtime_s: float | None = None
    score_basis: str | None = Field(default=None, description="which measurement the score uses, e.g. 'iPhone 12 Pro cpu' or 'host CPU (not an iPhone)'")
    model_key: str | None = None


class Regression(Doc):
    arch: str
    format: str
    metric: str
    device_id: str | None = None
    delegate: str | None = None
    baseline: float | None = None
    current: float | None = None
    change: float | None = None
    kind: Literal["regression", "missing", "improvement"] = "regression"
    detail: str = ""
    ci: Interval | None = Field(default=None, description="interval of the accuracy change, points")
    p_value: float | None = Field(default=None, description="exact McNemar p of an accuracy change on the same images")


class Missing(Doc):
    step: str
    arch: str | None = None
    format: str | None = None
    device_id: str | None = None
    delegate: str | None = None
    reason: str


class ReusedStep(Doc):
    """One result of a run that was computed by an earlier run and reused (results.json, report)."""

    step: Literal["train", "convert", "evaluate"]
    arch: str
    format: str | None = None
    from_run_id: str


class Results(Versioned):
    kind: Literal["results"] = "results"
    run_id: str
    created_at: datetime = Field(default_factory=utcnow)
    code_version: str
    image: str | None = None
    image_digest: str | None = None
    trigger: str = "manual"
    params: RunParams
    dataset_fingerprint: str
    dataset_synthetic: bool
    dataset_counts: dict[str, int]
    dataset_skipped: int = Field(default=0, description="files left out by prepare (reasons in dataset.json)")
    dataset_warnings: list[str] = Field(default_factory=list)
    classes: list[str]
    c: float
    score_basis: str
    models: list[ModelResult]
    devices: list[DeviceInfo] = Field(default_factory=list)
    missing: list[Missing] = Field(default_factory=list)
    baseline_run_id: str | None = None
    regressions: list[Regression] = Field(default_factory=list)
    train: dict[str, dict[str, float | int | str | None]] = Field(default_factory=dict)
    reused: list[ReusedStep] = Field(default_factory=list, description="results taken from earlier runs with "
                                                                       "the same code, data and parameters")


class Pointer(Versioned):
    """results/latest.json: where tonight's results are."""

    kind: Literal["pointer"] = "pointer"
    run_id: str
    results_key: str
    report_key: str | None = None
    leaderboard_key: str | None = None
    created_at: datetime = Field(default_factory=utcnow)


# ---------------------------------------------------------------- quant_debug.json
class LayerError(Doc):
    """One quantized layer as TensorFlow's quantization debugger measured it."""

    index: int = Field(description="position in the model's op order")
    tensor: str = Field(description="output tensor name (what the converter's denylisted_nodes takes)")
    op: str
    layers: list[str] = Field(description="Keras layer names fused into this op")
    rmse_over_scale: float | None = Field(description="RMSE of (dequantized - float) in quantization steps; ~0.29 is pure rounding")
    mean_error: float
    max_abs_error: float
    rmse: float
    scale: float
    zero_point: int
    num_elements: int


class QuantDebugReport(Versioned):
    kind: Literal["quant_debug"] = "quant_debug"
    run_id: str
    arch: str
    format: Format
    tool: str = Field(description="the debugger and TensorFlow version that measured it")
    calibration_samples: int
    images: int = Field(description="images the debugger ran (the calibration images)")
    suspect_threshold: float
    layers: list[LayerError]
    worst: list[str] = Field(description="tensor names of the five worst layers by rmse_over_scale")
    model_sha256: str = Field(description="the model.tflite beside this file")
    created_at: datetime = Field(default_factory=utcnow)
