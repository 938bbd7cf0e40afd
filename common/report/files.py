"""The report's section on each model file: static shapes, the GPU delegate check, what the input takes."""

from __future__ import annotations

from common.report.cells import display_name, e, gap, gpu_verdict
from common.schemas import ModelResult, Results


def _input_text(m: ModelResult) -> str:
    q = m.input_quantization
    if q is None:
        return "float32 RGB pixels 0..255"
    return f"uint8 RGB pixels, scale {q.scale:g}, zero point {q.zero_point}"


def _gpu_cell(m: ModelResult) -> str:
    g = m.gpu_compatibility
    text = gpu_verdict(m)
    if g is None or g.compatible:
        return f'<td class="gpu-ok">{e(text)}</td>'
    more = " \u2026"
    why = "; ".join(f"{i.op} at nodes {', '.join(map(str, i.nodes[:8]))}{more if len(i.nodes) > 8 else ''}: "
                    f"{i.reason}" for i in g.ops)
    return f'<td class="gpu-bad" title="{e(why)}">{e(text)}</td>'


def files_section(results: Results) -> str:
    rows = []
    for m in results.models:
        name = f"<td>{e(display_name(m.arch))}</td><td>{e(m.format)}</td>"
        if m.status != "ok":
            why = m.reason or "model failed"
            rows.append(f"<tr>{name}" + "".join(f'<td class="gapcell">{gap(why)}</td>' for _ in range(3)) + "</tr>")
            continue
        dyn = (f'<td class="num">{m.dynamic_tensors}</td>' if m.dynamic_tensors is not None
               else f'<td class="num gapcell">{gap("not recorded (converted by older code)")}</td>')
        rows.append(f'<tr data-model="{e(m.arch)}/{e(m.format)}">{name}{dyn}{_gpu_cell(m)}'
                    f"<td>{e(_input_text(m))}</td></tr>")
    table = ('<table id="files-table"><thead><tr><th>Architecture</th><th>Format</th>'
             '<th>Dynamic-shape tensors</th><th>GPU delegate (op check of the file)</th><th>Input</th></tr></thead>'
             f'<tbody>{"".join(rows)}</tbody></table>')
    note = ("Every model is converted with batch 1 and must have no tensor with a dynamic shape (\u22121 in its "
            "shape signature): the paper could not run EfficientNet on the GPU or the Neural Engine because of "
            "dynamic-sized tensors. The GPU column applies the TFLite GPU delegate's op rules "
            "(gpu_compatibility.cc: its op set, tensor types, slice rank) and the static-shape rule to the file; "
            "TensorFlow's own analyzer no longer checks ops for the GPU (it calls every model compatible). It does "
            "not replace a run on a phone's GPU, which the latency columns show when one was measured. int8 models "
            "take raw camera bytes: uint8 RGB with scale exactly 1 and zero point 0.")
    return (f'<section id="files"><h2>Model files: static shapes, GPU delegate, input</h2><p class="note">{note}</p>'
            f"{table}</section>")
