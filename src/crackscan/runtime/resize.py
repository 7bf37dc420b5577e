"""A fully convolutional LiteRT file rewritten for another input size, weights untouched.

A segmenter is exported at the window size it was trained on, and LiteRT cannot simply resize
its input: the decoder's bilinear upsamplings carry their output sizes as constants, so
``resize_tensor_input`` to another size fails when the tensors are allocated. Scaling those
constants, and the activations' recorded shapes, gives the same int8 network at any size that
is a multiple of its largest stride: a large window sends each pixel through the backbone once,
where small overlapping windows sent it nearly twice (issue 34). The weights and their
quantization are the file's own, so nothing is converted or calibrated again.
"""

from __future__ import annotations

import numpy as np

from ..errors import CrackscanError

# Ops that work on any spatial size given their inputs' (a convolution's padding is computed
# from its input): a graph of only these can be resized. A reshape, a mean or a dense layer
# fixes the size, and such a file keeps its own.
SPATIAL_OPS = frozenset({
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "DEQUANTIZE", "HARD_SWISH", "LEAKY_RELU",
    "LOGISTIC", "MAX_POOL_2D", "MAXIMUM", "MINIMUM", "MUL", "PAD", "PADV2", "MIRROR_PAD", "QUANTIZE", "RELU", "RELU6",
    "RELU_N1_TO_1", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "SUB", "TANH", "TRANSPOSE_CONV",
})
_RESIZES = ("RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR")


def _schema():
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:  # older LiteRT wheels ship no schema: such a file keeps its size
        return None
    return schema


def _op_names(schema) -> dict[int, str]:
    return {value: name for name, value in vars(schema.BuiltinOperator).items() if not name.startswith("_")}


def resizable(content: bytes) -> bool:
    """Whether ``litert_at_size`` can rewrite this file (one subgraph of SPATIAL_OPS, an
    image input of rank 4)."""
    schema = _schema()
    if schema is None:
        return False
    try:
        model = schema.Model.GetRootAs(content, 0)
    except Exception:  # noqa: BLE001 - the flatbuffer reader raises what it meets
        return False
    if model.SubgraphsLength() != 1:
        return False
    names = _op_names(schema)
    codes = [max(model.OperatorCodes(i).BuiltinCode(), model.OperatorCodes(i).DeprecatedBuiltinCode())
             for i in range(model.OperatorCodesLength())]
    graph = model.Subgraphs(0)
    if graph.InputsLength() != 1 or graph.Tensors(graph.Inputs(0)).ShapeLength() != 4:
        return False
    return all(names.get(codes[graph.Operators(i).OpcodeIndex()]) in SPATIAL_OPS for i in range(graph.OperatorsLength()))


def litert_at_size(content: bytes, height: int, width: int) -> bytes:
    """The file's flatbuffer for inputs of height x width (its appended metadata left off):
    every activation's height and width scaled, every resize's output size with them. Raises
    CrackscanError when the file cannot be resized or the size does not divide evenly."""
    import flatbuffers

    if not resizable(content):
        raise CrackscanError("this LiteRT file has a fixed input size")
    schema = _schema()
    model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    graph = model.subgraphs[0]
    base_h, base_w = (int(v) for v in graph.tensors[graph.inputs[0]].shape[1:3])
    names = _op_names(schema)
    codes = [names[max(code.builtinCode, code.deprecatedBuiltinCode)] for code in model.operatorCodes]

    def scaled(h: int, w: int) -> tuple[int, int]:
        if (h * height) % base_h or (w * width) % base_w:
            raise CrackscanError(f"{height}x{width} px does not divide into this model's strides "
                                 f"(it was made for {base_h}x{base_w})")
        return h * height // base_h, w * width // base_w

    for op in graph.operators:
        if codes[op.opcodeIndex] in _RESIZES:
            buffer = model.buffers[graph.tensors[op.inputs[1]].buffer]
            size = scaled(*np.frombuffer(bytes(bytearray(buffer.data)), np.int32))
            buffer.data = np.frombuffer(np.array(size, np.int32).tobytes(), np.uint8)
    for tensor in graph.tensors:
        data = model.buffers[tensor.buffer].data if tensor.buffer < len(model.buffers) else None
        if (data is None or len(data) == 0) and tensor.shape is not None and len(tensor.shape) == 4:
            h, w = scaled(int(tensor.shape[1]), int(tensor.shape[2]))
            tensor.shape = np.array([tensor.shape[0], h, w, tensor.shape[3]], np.int32)
            if tensor.shapeSignature is not None and len(tensor.shapeSignature) == 4:
                tensor.shapeSignature = np.array([tensor.shapeSignature[0], h, w, tensor.shapeSignature[3]], np.int32)
    builder = flatbuffers.Builder(len(content) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
