"""An ONNX Runtime `.ort` model read back into an ONNX graph, with its weights dequantized once.

Moonshine's `.ort` files keep every weight as int8 and rebuild the float weights on each run
(Cast -> Mul -> Add in the main graph, and the embedding transposed again inside the decoder's
cached branch): 80 ms of a CPU per decoder step, most of a decode, for a model whose matrix
work is a few ms. An `.ort` graph is not re-optimised when loaded, so it is read here (ONNX
Runtime's own flatbuffer bindings), turned into ONNX with the `onnx` package, and the nodes
whose inputs are all constants are computed once in numpy (`fold_constants`); the result loads as
an ordinary ONNX model that ONNX Runtime optimises on load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def ort_to_onnx(path: Path) -> Any:
    """The `.ort` model at `path` as an onnx.ModelProto."""
    import onnx
    from onnxruntime.tools.ort_format_model.ort_flatbuffers_py.fbs import InferenceSession as Fbs

    buf = path.read_bytes()
    model = Fbs.InferenceSession.GetRootAs(buf, 0).Model()
    if model is None:
        raise ValueError(f"{path} holds no model")
    opsets = [onnx.helper.make_opsetid(model.OpsetImport(i).Domain().decode(), model.OpsetImport(i).Version())
              for i in range(model.OpsetImportLength())]
    graph = _graph(model.Graph(), "main")
    return onnx.helper.make_model(graph, opset_imports=opsets, ir_version=model.IrVersion())


def _s(value: bytes | None) -> str:
    return value.decode() if value else ""


def _tensor(t: Any) -> Any:
    import onnx

    dims = [t.Dims(i) for i in range(t.DimsLength())]
    if t.StringDataLength():
        raise ValueError(f"string tensor {_s(t.Name())} is not supported")
    raw = t.RawDataAsNumpy().tobytes() if t.RawDataLength() else b""
    proto = onnx.TensorProto()
    proto.name = _s(t.Name())
    proto.data_type = t.DataType()
    proto.dims.extend(dims)
    proto.raw_data = raw
    return proto


def _value_info(v: Any) -> Any:
    import onnx

    name = _s(v.Name())
    ti = v.Type()
    if ti is None or ti.ValueType() != 1:  # not a tensor: keep the name only
        return onnx.helper.make_empty_tensor_value_info(name)
    from onnxruntime.tools.ort_format_model.ort_flatbuffers_py.fbs.TensorTypeAndShape import (
        TensorTypeAndShape,
    )

    tts = TensorTypeAndShape()
    table = ti.Value()
    tts.Init(table.Bytes, table.Pos)
    shape = tts.Shape()
    dims: list[Any] | None = None
    if shape is not None:
        dims = []
        for i in range(shape.DimLength()):
            dv = shape.Dim(i).Value()
            if dv is None or dv.DimType() == 0:
                dims.append(None)
            elif dv.DimType() == 1:
                dims.append(dv.DimValue())
            else:
                dims.append(_s(dv.DimParam()))
    return onnx.helper.make_tensor_value_info(name, tts.ElemType(), dims)


def _attribute(a: Any) -> Any:
    import onnx

    kind = a.Type()
    proto = onnx.AttributeProto()
    proto.name = _s(a.Name())
    proto.type = kind
    A = onnx.AttributeProto
    if kind == A.FLOAT:
        proto.f = a.F()
    elif kind == A.INT:
        proto.i = a.I()
    elif kind == A.STRING:
        proto.s = a.S() or b""
    elif kind == A.TENSOR:
        proto.t.CopyFrom(_tensor(a.T()))
    elif kind == A.GRAPH:
        proto.g.CopyFrom(_graph(a.G(), proto.name))
    elif kind == A.FLOATS:
        proto.floats.extend(a.Floats(i) for i in range(a.FloatsLength()))
    elif kind == A.INTS:
        proto.ints.extend(a.Ints(i) for i in range(a.IntsLength()))
    elif kind == A.STRINGS:
        proto.strings.extend(a.Strings(i) for i in range(a.StringsLength()))
    elif kind == A.TENSORS:
        proto.tensors.extend(_tensor(a.Tensors(i)) for i in range(a.TensorsLength()))
    elif kind == A.GRAPHS:
        proto.graphs.extend(_graph(a.Graphs(i), proto.name) for i in range(a.GraphsLength()))
    else:
        raise ValueError(f"attribute {proto.name} of type {kind} is not supported")
    return proto


def _graph(g: Any, name: str) -> Any:
    import onnx

    infos = {_s(g.NodeArgs(i).Name()): g.NodeArgs(i) for i in range(g.NodeArgsLength())}
    nodes = []
    for i in range(g.NodesLength()):
        n = g.Nodes(i)
        node = onnx.helper.make_node(
            _s(n.OpType()), [_s(n.Inputs(j)) for j in range(n.InputsLength())],
            [_s(n.Outputs(j)) for j in range(n.OutputsLength())], name=_s(n.Name()) or None,
            domain=_s(n.Domain()) or None)
        node.attribute.extend(_attribute(n.Attributes(j)) for j in range(n.AttributesLength()))
        nodes.append(node)
    inputs = [_s(g.Inputs(i)) for i in range(g.InputsLength())]
    outputs = [_s(g.Outputs(i)) for i in range(g.OutputsLength())]
    inits = [_tensor(g.Initializers(i)) for i in range(g.InitializersLength())]
    init_names = {t.name for t in inits}
    return onnx.helper.make_graph(
        nodes, name, [_value_info(infos[n]) for n in inputs if n not in init_names],
        [_value_info(infos[n]) for n in outputs], initializer=inits)


_FOLDABLE = frozenset({"Cast", "Mul", "Add", "Sub", "Transpose"})


def _np_type(onnx_type: int) -> Any:
    import onnx

    return onnx.helper.tensor_dtype_to_np_dtype(onnx_type)


def fold_constants(model: Any) -> int:
    """Compute in numpy every Cast/Mul/Add/Sub/Transpose whose inputs are all initializers (of
    its graph or an enclosing one), in place; returns how many nodes were folded. A result made
    only of the main graph's constants is kept there once (both branches of the decoder's If
    transpose the same embedding)."""
    return _fold(model.graph, {}, model.graph)


def _fold(graph: Any, outer: dict[str, Any], root: Any) -> int:
    import onnx
    from onnx import numpy_helper

    consts = dict(outer)
    consts.update({t.name: t for t in graph.initializer})
    local = {t.name for t in graph.initializer}
    values: dict[str, np.ndarray] = {}

    def value(name: str) -> np.ndarray:
        if name not in values:
            values[name] = numpy_helper.to_array(consts[name])
        return values[name]

    folded = 0
    kept = []
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                folded += _fold(attr.g, consts, root)
        if node.op_type in _FOLDABLE and node.input and all(i in consts for i in node.input):
            args = [value(i) for i in node.input]
            if node.op_type == "Cast":
                result = args[0].astype(_np_type(node.attribute[0].i))
            elif node.op_type == "Mul":
                result = args[0] * args[1]
            elif node.op_type == "Add":
                result = args[0] + args[1]
            elif node.op_type == "Sub":
                result = args[0] - args[1]
            else:
                perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
                result = np.transpose(args[0], perm)
            name = node.output[0]
            hoist = graph is not root and not any(i in local for i in node.input)
            home = root if hoist else graph
            tensor = next((t for t in home.initializer if t.name == name), None) if hoist else None
            if tensor is None:
                tensor = numpy_helper.from_array(np.ascontiguousarray(result), name)
                home.initializer.append(tensor)
            if not hoist:
                local.add(name)
            consts[name] = tensor
            values[node.output[0]] = result
            folded += 1
            continue
        kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    used = {i for n in _all_nodes(graph) for i in n.input} | {o.name for o in graph.output}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    return folded


def _all_nodes(graph: Any) -> list[Any]:
    import onnx

    out = []
    for node in graph.node:
        out.append(node)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                out += _all_nodes(attr.g)
    return out


def split_branches(model: Any, flag: str) -> dict[str, Any]:
    """A model whose graph is an If on the boolean input `flag` (after `fold_constants`, all
    that is left of a merged decoder's main graph) as two models, {"then": ..., "else": ...},
    each the branch's nodes on the main graph's inputs and constants, without `flag`. Each can
    then be optimised (and quantized) on its own: ONNX Runtime's quantizer does not enter If
    branches. Outputs a branch does not compute (the cached branch's cross-attention keys) are
    left out of it."""
    import onnx
    from onnx import helper

    g = model.graph
    ifs = [n for n in g.node if n.op_type == "If"]
    if len(ifs) != 1 or len(g.node) != 1 or list(ifs[0].input) != [flag]:
        raise ValueError(f"the graph is not one If on {flag!r}")
    out = {}
    for branch, key in (("then_branch", "then"), ("else_branch", "else")):
        sub = next(a.g for a in ifs[0].attribute if a.name == branch)
        nodes = list(sub.node)
        for inner, outer in zip(sub.output, ifs[0].output, strict=True):
            if inner.name != outer:
                nodes.append(helper.make_node("Identity", [inner.name], [outer]))
        used = {i for n in _all_nodes(onnx.helper.make_graph(nodes, "x", [], [])) for i in n.input}
        made = {o for n in nodes for o in n.output}
        graph = helper.make_graph(
            nodes, key, [i for i in g.input if i.name in used],
            [o for o in g.output if o.name in made],
            initializer=[t for t in (*g.initializer, *sub.initializer) if t.name in used])
        out[key] = helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version)
    return out
