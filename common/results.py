"""Build the run's results object and its Markdown leaderboard from the step documents."""

from __future__ import annotations

from common.errors import ConfigError
from common.scoring import mai_score
from common.stats import plus_minus
from common.schemas import (
    BenchResult,
    ConvertReport,
    DatasetManifest,
    DeviceInfo,
    EvalReport,
    LatencyEntry,
    Missing,
    ModelResult,
    Results,
    RunManifest,
    TrainReport,
    measurement_flags,
)

HOST_LABEL = "host CPU, not an iPhone"


def entry_label(e: LatencyEntry) -> str:
    applied = e.delegate_applied or e.delegate_requested
    where = f"{e.device_name} · {applied}"
    if applied != e.delegate_requested:
        where += f" (asked {e.delegate_requested})"
    if e.backend == "host" and "not an iphone" not in e.device_name.lower():
        where += f" ({HOST_LABEL})"
    return where


DEFAULT_COVERAGE_THRESHOLD = 0.9


def latency_entry(b: BenchResult, key: str, coverage_threshold: float = DEFAULT_COVERAGE_THRESHOLD) -> LatencyEntry:
    t = b.timings_ms
    return LatencyEntry(
        device_id=b.device.id, device_name=b.device.name, device_model=b.device.model, device_os=b.device.os,
        backend=b.device.backend, delegate_requested=b.delegate_requested, delegate_applied=b.delegate_applied,
        status=b.status, reason=b.reason,
        mean_ms=t.mean if t else None, std_ms=t.std if t else None, p50_ms=t.p50 if t else None,
        p90_ms=t.p90 if t else None, count=t.count if t else None, init_ms=t.init if t else None,
        peak_memory_mb=(b.memory.peak_mb or b.memory.overall_mb) if b.memory else None, key=key,
        conditions=b.conditions, flags=measurement_flags(b.conditions, coverage_threshold) if b.status == "ok" else [],
    )


def choose_basis(entries: list[LatencyEntry], basis: str) -> LatencyEntry | None:
    """The measurement a model's score uses.

    'auto': an iPhone's CPU when one was measured (as the paper scores), else the host CPU.
    'DEVICE_ID/DELEGATE': exactly that one.
    """
    ok = [e for e in entries if e.status == "ok" and e.mean_ms]
    if basis == "auto":
        for pred in (lambda e: e.backend == "ios" and e.delegate_requested == "cpu",
                     lambda e: e.backend == "host" and e.delegate_requested == "cpu",
                     lambda e: True):
            found = sorted((e for e in ok if pred(e)), key=lambda e: (e.device_id, e.delegate_requested))
            if found:
                return found[0]
        return None
    device, _, delegate = basis.partition("/")
    if not device or not delegate:
        raise ConfigError(f"bad setting --score-basis {basis!r}: use auto or DEVICE_ID/DELEGATE (e.g. iphone13-3/cpu)")
    for e in ok:
        if e.device_id == device and e.delegate_requested == delegate:
            return e
    return None


def build_results(
    run: RunManifest,
    dataset: DatasetManifest,
    trains: dict[str, TrainReport | None],
    converts: dict[tuple[str, str], ConvertReport | None],
    evals: dict[tuple[str, str], EvalReport | None],
    benches: dict[tuple[str, str], list[tuple[str, BenchResult]]],
    *,
    c: float = 1.0,
    score_basis: str = "auto",
    coverage_threshold: float = DEFAULT_COVERAGE_THRESHOLD,
) -> Results:
    """Everything the leaderboard needs, with every gap recorded in `missing` (never invented)."""
    models: list[ModelResult] = []
    missing: list[Missing] = []
    devices: dict[str, DeviceInfo] = {}
    for arch in run.params.archs:
        if trains.get(arch) is None:
            missing.append(Missing(step="train", arch=arch, reason="no train.json: training failed or did not run"))
        for fmt in run.params.formats:
            conv, ev = converts.get((arch, fmt)), evals.get((arch, fmt))
            m = ModelResult(arch=arch, format=fmt)
            if conv is None:
                m.status, m.reason = "failed", "not converted"
                missing.append(Missing(step="convert", arch=arch, format=fmt, reason="no convert.json"))
                models.append(m)
                continue
            m.size_mb, m.sha256, m.model_key = conv.size_mb, conv.model.sha256, conv.model.key
            m.dynamic_tensors, m.gpu_compatibility = conv.dynamic_tensors, conv.gpu_compatibility
            m.input_quantization = conv.input.quantization
            if ev is None or ev.model_sha256 != conv.model.sha256:
                missing.append(Missing(step="evaluate", arch=arch, format=fmt,
                                       reason="no eval.json for this model" if ev is None
                                       else "eval.json is for another model file"))
                ev = None
            else:
                m.top1, m.top3, m.keras_top1, m.drop_top1 = ev.top1, ev.top3, ev.keras_top1, ev.drop_top1
                m.count, m.top1_ci, m.top3_ci = ev.count, ev.top1_ci, ev.top3_ci
                m.drop_top1_test, m.drop_top3_test, m.per_image = ev.drop_top1_test, ev.drop_top3_test, ev.per_image
                m.ties = ev.ties
            for key, b in benches.get((arch, fmt), []):
                if b.model_sha256 != conv.model.sha256:
                    continue  # a measurement of an older file of this model
                devices.setdefault(b.device.id, b.device)
                e = latency_entry(b, key, coverage_threshold)
                if e.status == "ok" and ev is not None and e.mean_ms:
                    e.score = mai_score(ev.top1, ev.top3, e.mean_ms / 1000.0, c)
                if e.status != "ok":
                    missing.append(Missing(step="benchmark", arch=arch, format=fmt, device_id=b.device.id,
                                           delegate=b.delegate_requested, reason=b.reason or "missing"))
                m.latency.append(e)
            if not m.latency:
                missing.append(Missing(step="benchmark", arch=arch, format=fmt, reason="no latency measured"))
            basis = choose_basis(m.latency, score_basis)
            if basis is not None:
                m.score_basis = entry_label(basis)
                m.score_runtime_s = basis.mean_ms / 1000.0 if basis.mean_ms else None
                m.score = basis.score
            models.append(m)
    counts = {split: info.count for split, info in dataset.splits.items()}
    train_summary = {
        arch: {"val_top1": t.last_val_top1, "val_top3": t.last_val_top3, "epochs": t.epochs,
               "images_per_s": t.images_per_s, "wall_time_s": t.wall_time_s,
               "hardware": ", ".join(t.hardware.gpus) or f"{t.hardware.cpu} ({t.hardware.cpu_count} cores)"}
        for arch, t in trains.items() if t is not None
    }
    basis_desc = ("auto: iPhone CPU when measured, else host CPU (not an iPhone)" if score_basis == "auto"
                  else score_basis)
    return Results(
        run_id=run.run_id, code_version=run.code_version, image=run.image, image_digest=run.image_digest,
        trigger=run.trigger,
        params=run.params, dataset_fingerprint=dataset.fingerprint, dataset_synthetic=dataset.synthetic,
        dataset_counts=counts, dataset_skipped=len(dataset.skipped), dataset_warnings=list(dataset.warnings),
        classes=[c_.name for c_ in sorted(dataset.classes, key=lambda x: x.index)],
        c=c, score_basis=basis_desc, models=models, devices=sorted(devices.values(), key=lambda d: d.id),
        missing=missing, train=train_summary,
    )


def _f(v: float | None, digits: int = 1) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _score(v: float | None) -> str:
    return "–" if v is None else (f"{v:.4f}" if v >= 1e-3 else f"{v:.2e}")


def _p(v: float) -> str:
    return f"{v:.2g}" if v >= 0.001 else "<0.001"


def _accuracy(m: ModelResult, metric: str) -> str:
    """'92.5 ±1.1', and where the decision of some images rests on tied scores, the range over tie-breaks."""
    text = plus_minus(getattr(m, metric), getattr(m, f"{metric}_ci"))
    t = m.ties
    if t is not None and getattr(t, f"{metric}_images"):
        text += f" (ties {getattr(t, f'{metric}_min'):.1f}..{getattr(t, f'{metric}_max'):.1f})"
    return text


def _drop(m: ModelResult) -> str:
    """Keras minus TFLite top-1 with its paired interval and McNemar p, e.g. '0.8 ±1.0, p 0.12'."""
    t = m.drop_top1_test
    if t is None:
        return _f(m.drop_top1)
    return f"{plus_minus(t.diff, t.ci)}, p {_p(t.p_value)}"


def ranked(results: Results) -> list[ModelResult]:
    return sorted(results.models, key=lambda m: (m.score is None, -(m.score or 0.0), -(m.top1 or 0.0)))


def render_leaderboard(results: Results) -> str:
    """The leaderboard as Markdown, best score first; gaps shown with their reasons."""
    lines = [f"# scenebench leaderboard — run `{results.run_id}`", ""]
    if results.dataset_synthetic:
        lines += ["> **Synthetic data**: these numbers come from the generated stand-in dataset, "
                  "not from CamSDD photos. They show the pipeline works, not how the models rank on real scenes.", ""]
    lines += [f"Dataset `{results.dataset_fingerprint}` ({', '.join(f'{k} {v}' for k, v in results.dataset_counts.items())}), "
              f"{len(results.classes)} classes · code `{results.code_version}` · C = {results.c:g} · "
              f"score basis: {results.score_basis}", ""]
    if results.reused:
        from common.stepcache import describe_reused

        lines += [f"> Same code, data and parameters as an earlier run: {line} (latency measured in this run)."
                  for line in describe_reused(results.reused)] + [""]
    lines += ["| # | model | format | size MB | top-1 % | top-3 % | Keras top-1 % | drop pts | latency ms | measured on | peak RAM MB | score |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for i, m in enumerate(ranked(results), 1):
        basis = next((e for e in m.latency if m.score_basis and entry_label(e) == m.score_basis), None)
        lines.append(
            f"| {i} | {m.arch} | {m.format} | {_f(m.size_mb, 2)} | {_accuracy(m, 'top1')} | "
            f"{_accuracy(m, 'top3')} | {_f(m.keras_top1)} | {_drop(m)} | "
            f"{_f(basis.mean_ms if basis else None, 2)} | "
            f"{m.score_basis or (m.reason or 'not measured')} | {_f(basis.peak_memory_mb if basis else None)} | "
            f"{_score(m.score)} |")
    counts = sorted({m.count for m in results.models if m.count})
    if counts:
        lines += ["", f"top-1/top-3: ± is half the width of the seeded 95 % bootstrap interval over the "
                  f"{'/'.join(map(str, counts))} validation images. drop pts: Keras top-1 minus TFLite top-1 on "
                  "the same images, ± its paired bootstrap interval, p the exact McNemar test (p < 0.05: the "
                  "conversion changed accuracy beyond chance). (ties a..b): some images' decision rests on "
                  "classes with equal scores (an int8 softmax has 1/256 resolution); the value breaks ties by "
                  "class index, a..b is the accuracy over every tie-break."]
    all_entries = [(m, e) for m in results.models for e in m.latency]
    if all_entries:
        lines += ["", "## Latency on every device and delegate", "",
                  "| model | format | device | delegate (applied) | mean ms | p50 ms | p90 ms | init ms | peak RAM MB | score |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for m, e in sorted(all_entries, key=lambda me: (me[0].arch, me[0].format, me[1].device_id, me[1].delegate_requested)):
            dev = f"{e.device_name} [{e.device_os}]" if e.backend == "host" else f"{e.device_name} [{e.device_model}, {e.device_os}]"
            if e.backend == "host" and "not an iphone" not in e.device_name.lower():
                dev += f" — {HOST_LABEL}"
            deleg = e.delegate_requested + (f" ({e.delegate_applied})" if e.delegate_applied and e.delegate_applied != e.delegate_requested else "")
            if e.status != "ok":
                lines.append(f"| {m.arch} | {m.format} | {dev} | {deleg} | missing: {e.reason} | | | | | |")
                continue
            if e.delegate_applied == "partial":
                c = e.conditions
                share = (f", {c.delegated_nodes} of {c.total_nodes} nodes" if c is not None and c.total_nodes
                         and c.delegated_nodes is not None else "")
                deleg = f"{e.delegate_requested} (partly{share}; the rest on the CPU)"
            if e.flags:
                deleg += " ⚠ " + "; ".join(e.flags)
            # Without per-run samples there are no percentiles; the mean (and its std) still stand.
            no_samples = "no samples" if e.mean_ms is not None else "–"
            p50 = _f(e.p50_ms, 2) if e.p50_ms is not None else no_samples
            p90 = _f(e.p90_ms, 2) if e.p90_ms is not None else no_samples
            mean = _f(e.mean_ms, 2) + (f" ± {e.std_ms:.2f}" if e.std_ms is not None and e.p50_ms is None else "")
            lines.append(f"| {m.arch} | {m.format} | {dev} | {deleg} | {mean} | {p50} | "
                         f"{p90} | {_f(e.init_ms, 1)} | {_f(e.peak_memory_mb)} | {_score(e.score)} |")
    if results.missing:
        lines += ["", "## Missing", ""]
        for miss in results.missing:
            what = " ".join(x for x in (miss.arch, miss.format, miss.device_id, miss.delegate) if x)
            lines.append(f"- {miss.step} {what}: {miss.reason}")
    if results.regressions:
        lines += ["", f"## Changes against run `{results.baseline_run_id}`", ""]
        for r in results.regressions:
            where = " ".join(x for x in (r.arch, r.format, r.device_id, r.delegate) if x)
            lines.append(f"- **{r.kind}** {where} {r.metric}: {r.detail}")
    lines += ["", "Score = 2^((top1 − 96) + (top3 − 99)) / (C · runtime s), as in the Mobile AI 2021 "
              "Camera Scene Detection challenge.", ""]
    return "\n".join(lines)
