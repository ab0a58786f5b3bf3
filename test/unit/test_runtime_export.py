"""ONNX export: valid graphs (onnx.checker), the promised inputs/outputs, manifest and staleness."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from diffusion_controller.runtime.onnx_export import (
    DENOISER_INPUTS,
    OPSET,
    ExportError,
    check_export,
    conv1d_as_conv2d,
    export_is_current,
    export_onnx,
)
from diffusion_controller.runtime.random_model import make_random_artifact

torch.set_num_threads(1)
TINY = dict(image_size=(16, 16), unet={"down_dims": [16, 32], "kernel_size": 3, "n_groups": 4,
                                       "step_embed_dim": 16})


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory):
    d = make_random_artifact(tmp_path_factory.mktemp("m") / "model", **TINY)
    return d, export_onnx(d)


def _dims(vi: onnx.ValueInfoProto) -> list:
    return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]


def test_graphs_pass_the_checker_with_promised_io(exported) -> None:
    d, manifest = exported
    enc = onnx.load(f"{d}/onnx/encoder.onnx")
    den = onnx.load(f"{d}/onnx/denoiser.onnx")
    for m in (enc, den):
        onnx.checker.check_model(m, full_check=True)
        assert {o.domain: o.version for o in m.opset_import}[""] >= 17
    assert [i.name for i in enc.graph.input] == ["images", "joints"]
    assert [o.name for o in enc.graph.output] == ["cond"]
    assert _dims(enc.graph.input[0])[1:] == [2, 1, 3, 16, 16]
    assert tuple(i.name for i in den.graph.input) == DENOISER_INPUTS
    assert [o.name for o in den.graph.output] == ["actions"]
    dims = {i.name: _dims(i) for i in den.graph.input}
    assert dims["x_init"] == ["K", 16, 7] and dims["schedule"] == ["S", 6]
    assert dims["step_noise"] == ["S", "K", 16, 7] and dims["prefix_mask"] == [1, 16, 1]
    # the DDIM loop lives in the graph: one Loop whose body holds the U-Net and the update
    loops = [n for n in den.graph.node if n.op_type == "Loop"]
    assert len(loops) == 1
    body = helper.get_attribute_value(loops[0].attribute[0])
    ops = {n.op_type for n in body.node}
    assert {"Conv", "ConvTranspose", "Clip", "Gather"} <= ops
    assert manifest["opset"] == OPSET >= 17 and manifest["kind"] == "diffusion"
    assert manifest["files"]["denoiser"]["inputs"] == list(DENOISER_INPUTS)
    assert set(manifest["files"]) == {"encoder", "denoiser"}


def test_regression_export_has_a_head(tmp_path) -> None:
    d = make_random_artifact(tmp_path / "reg", kind="regression", **TINY)
    manifest = export_onnx(d)
    assert set(manifest["files"]) == {"encoder", "head"}
    head = onnx.load(f"{d}/onnx/head.onnx")
    onnx.checker.check_model(head, full_check=True)
    assert [i.name for i in head.graph.input] == ["cond"]


def test_check_export_detects_stale_and_corrupt(exported, tmp_path) -> None:
    src, _ = exported
    d = tmp_path / "copy"
    shutil.copytree(src, d)
    assert export_is_current(d)
    check_export(d)
    # corrupt graph: one flipped byte
    path = d / "onnx" / "denoiser.onnx"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x55
    path.write_bytes(bytes(raw))
    with pytest.raises(ExportError, match="corrupt denoiser"):
        check_export(d)
    shutil.copy(f"{src}/onnx/denoiser.onnx", path)
    check_export(d)
    # stale: the config changed after the export
    cfg_path = d / "config.json"
    doc = json.loads(cfg_path.read_text())
    doc["policy"]["n_action_steps"] = 4
    cfg_path.write_text(json.dumps(doc))
    with pytest.raises(ExportError, match="another config"):
        check_export(d)
    # missing manifest
    (d / "onnx" / "manifest.json").unlink()
    with pytest.raises(ExportError, match="no ONNX manifest"):
        check_export(d)
    assert not export_is_current(d)


def test_conv1d_as_conv2d_keeps_the_arithmetic() -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 4, 3)).astype(np.float32)
    wt = rng.standard_normal((6, 5, 4)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1], strides=[2]),
        helper.make_node("ConvTranspose", ["y", "wt"], ["z"], strides=[2], pads=[1, 1]),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 9])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 5, 10])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(wt, "wt")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    x = rng.standard_normal((2, 4, 9)).astype(np.float32)
    before = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    assert conv1d_as_conv2d(model.graph) == 2
    onnx.checker.check_model(model, full_check=True)
    assert all(len(i.dims) == 4 for i in model.graph.initializer if i.name in ("w", "wt"))
    after = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    assert after.shape == before.shape
    np.testing.assert_allclose(after, before, atol=1e-5)
