"""What a plan holds, for `batchscore inspect`: every layer with its fused members, kind, output
shapes, precision, tactic and place in the activation arena, plus totals. Reads only the header."""

from __future__ import annotations

from engine.ir import format_shape
from engine.plan import Plan

VIEW_OPS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"})


def describe_plan(plan: Plan) -> dict:
    header = plan.header
    values = header.get("values", {})
    memory = header.get("memory", {})
    offsets, sizes = memory.get("offsets", {}), memory.get("sizes", {})
    views, slices = memory.get("views", {}), memory.get("slices", {})
    layers = []
    for layer in header["layers"]:
        outputs = []
        for name in layer["outputs"]:
            if not name:
                continue
            info = values.get(name, {})
            if name in offsets:
                place = {"arena_offset": offsets[name], "arena_bytes": sizes[name]}
            elif name in slices:
                place = {"slice_of": slices[name]["root"], "axis": slices[name]["axis"],
                         "range": [slices[name]["start"], slices[name]["stop"]]}
            elif name in views:
                place = {"view_of": views[name]}
            else:
                place = {"memory": "own allocation"}
            outputs.append({"name": name, "shape": info.get("shape"), "dtype": info.get("dtype"), **place})
        runs = not (layer["kind"] in VIEW_OPS or layer.get("attrs", {}).get("elided"))
        layers.append({
            "name": layer["name"], "kind": layer["kind"], "members": layer.get("members", [layer["name"]]),
            "precision": layer.get("precision"), "tactic": layer.get("tactic"), "kernel": layer["kernel"],
            "runs_kernel": runs, "outputs": outputs,
        })
    weight_bytes = sum(int(plan.tensors[n].nbytes) for n in header.get("weights", []) if n in plan.tensors)
    return {
        "model": header.get("model_name"), "builder_version": header.get("builder_version"),
        "created": header.get("created"), "device": header.get("device"), "precision": header.get("precision"),
        "max_batch": header.get("max_batch"), "inputs": header["inputs"], "outputs": header["outputs"],
        "layers": layers, "fp32_fallback": header.get("fp32_fallback"),
        "fp16_layer_bound": header.get("fp16_layer_bound"), "fp16_output_error": header.get("fp16_output_error"),
        "totals": {
            "layers": len(layers),
            "layers_running_kernels": sum(1 for l in layers if l["runs_kernel"]),
            "source_nodes": header.get("source_nodes", sum(len(l["members"]) for l in layers)),
            "weight_bytes": weight_bytes,
            "arena_bytes": memory.get("arena_bytes"),
            "activation_bytes": memory.get("activation_bytes"),
            "arena_batch": memory.get("batch"),
        },
    }


def format_plan(info: dict) -> str:
    lines = [f"plan for {info['model']}  (batchscore {info['builder_version']}, {info['created']}, "
             f"device {info['device'].get('kind')}, precision {info['precision']}, max batch {info['max_batch']})"]
    for spec in info["inputs"]:
        lines.append(f"  input  {spec['name']}: {spec['dtype']} {format_shape(spec['shape'])}")
    for spec in info["outputs"]:
        lines.append(f"  output {spec['name']}: {spec['dtype']} {format_shape(spec['shape'])}")
    lines.append("")
    # GPU tactics name their cuDNN engine and knobs ("cudnn:28:eng41_k2=7_k13=0..."): the column fits the longest
    tw = max([8] + [len(str(layer["tactic"] or "")) for layer in info["layers"]])
    lines.append(f"  {'#':>4}  {'kind':<16} {'output':<18} {'precision':<9} {'tactic':<{tw}} {'memory':<34} layer")
    for i, layer in enumerate(info["layers"]):
        members = " + ".join(layer["members"])
        first = layer["outputs"][0] if layer["outputs"] else {}
        lines.append(f"  {i:>4}  {layer['kind']:<16} {format_shape(first.get('shape')):<18} {layer['precision'] or '':<9} "
                     f"{layer['tactic'] or '':<{tw}} {_place(first):<34} {members}")
        for extra in layer["outputs"][1:]:
            lines.append(f"  {'':>4}  {'':<16} {format_shape(extra.get('shape')):<18} {'':<9} {'':<{tw}} {_place(extra):<34}")
    t = info["totals"]
    lines.append("")
    lines.append(f"  {t['layers']} layers ({t['layers_running_kernels']} run kernels) from {t['source_nodes']} source nodes; "
                 f"weights {t['weight_bytes'] / 1e6:.1f} MB")
    if info.get("fp32_fallback") is not None:  # an FP16 build checked every layer (engine/precision.py)
        fallback = info["fp32_fallback"]
        listed = ", ".join(f"{name} ({_error(error)})" for name, error in fallback.items())
        lines.append(f"  in FP32 (FP16 error above {info['fp16_layer_bound']:.0e}, or values near float16's limit): "
                     f"{listed}" if fallback else
                     f"  every layer within the FP16 error bound ({info['fp16_layer_bound']:.0e}): none in FP32")
        if info.get("fp16_output_error") is not None:
            lines.append(f"  expected output error against FP32 (emulated, random input): "
                         f"{_error(info['fp16_output_error'])}")
    if t["activation_bytes"]:
        lines.append(f"  activation arena at batch {t['arena_batch']}: {t['arena_bytes'] / 1e6:.1f} MB for "
                     f"{t['activation_bytes'] / 1e6:.1f} MB of activations "
                     f"({100 * t['arena_bytes'] / t['activation_bytes']:.0f}%)")
    return "\n".join(lines)


def _error(value) -> str:
    if value in ("inf", float("inf")):  # engine/precision.py: reaches FP16_MAX / FP16_HEADROOM, or overflows
        return "near float16's limit"
    return value if isinstance(value, str) else f"{value:.1e}"


def _place(output: dict) -> str:
    if "arena_offset" in output:
        return f"arena @{output['arena_offset']} ({output['arena_bytes'] / 1e6:.2f} MB)"
    if "slice_of" in output:
        return f"writes {output['slice_of']}[axis {output['axis']}: {output['range'][0]}:{output['range'][1]}]"
    if "view_of" in output:
        return f"view of {output['view_of']}"
    return output.get("memory", "")

