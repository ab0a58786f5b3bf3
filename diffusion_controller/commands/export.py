"""`diffusion-controller export`: ONNX graphs (and TensorRT engines) from a model artifact.

ONNX: writes encoder.onnx + denoiser.onnx (or head.onnx) + manifest.json into <model>/onnx (or
--out), checks them with onnx.checker, and by default compares onnxruntime with the torch
reference on one random observation. TensorRT: exports ONNX if needed, then builds the engines
on this GPU into the engine cache (--out sets its directory), reusing valid cached engines.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from diffusion_controller.report import format_table, write_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a model to ONNX or build TensorRT engines")
    p.add_argument("--model", required=True, help="model artifact directory")
    p.add_argument("--format", choices=("onnx", "tensorrt"), default="onnx")
    p.add_argument("--fp16", action="store_true", help="FP16 engines (--format tensorrt)")
    p.add_argument("--out", help="ONNX output directory (default <model>/onnx); for tensorrt, "
                                 "the engine cache directory (default "
                                 "~/.cache/diffusion_controller/engines)")
    p.add_argument("--max-samples", type=int, default=None,
                   help="largest num_samples the TensorRT engines accept (default: the "
                        "num_samples parameter's maximum, 32, the engines the node loads)")
    p.add_argument("--no-verify", action="store_true",
                   help="skip the onnxruntime-vs-torch comparison after an ONNX export")
    p.add_argument("--json", help="write the result to this file")
    p.add_argument("--quiet", action="store_true",
                   help="no progress lines while the export or engine build runs")
    p.set_defaults(func=run)


def _verify(model_dir: str, out_dir: str | None) -> float:
    """Max abs action difference (rad) between onnxruntime and torch on one random observation."""
    import numpy as np

    from diffusion_controller.runtime.ort_backend import OrtBackend
    from diffusion_controller.runtime.torch_backend import TorchBackend

    ref = TorchBackend.load(model_dir)
    if out_dir is None:
        ort_b = OrtBackend.load(model_dir)
    else:
        from diffusion_controller.policy.artifact import load_config

        cfg, norms, meta = load_config(model_dir)
        ort_b = OrtBackend(out_dir, cfg, norms, meta, model_dir)
    obs = ref.random_observation(np.random.default_rng(0))
    a = ref.infer(obs, seed=0).actions
    b = ort_b.infer(obs, seed=0).actions
    return float(np.max(np.abs(a - b)))


def run(args: argparse.Namespace) -> int:
    from diffusion_controller.policy.artifact import ArtifactError

    try:
        return _run(args)
    except (ArtifactError, RuntimeError, ValueError) as exc:
        # ExportError is a RuntimeError; TensorRT / CUDA absence arrives as RuntimeError too.
        print(f"export failed: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    model_dir = os.fspath(args.model)
    payload: dict[str, Any]
    if args.format == "onnx":
        if args.fp16:
            raise SystemExit("export: --fp16 applies to --format tensorrt (ONNX graphs are fp32)")
        from diffusion_controller.progress import Progress
        from diffusion_controller.runtime.onnx_export import default_export_dir, export_onnx

        bar = Progress("export onnx", 1 if args.no_verify else 2, "phase",
                       quiet=bool(getattr(args, "quiet", False)))
        with bar.working(phase="tracing and checking the graphs"):
            manifest = export_onnx(model_dir, args.out)
        bar.update(1, phase="exported")
        out_dir = args.out or os.fspath(default_export_dir(model_dir))
        rows = []
        for role, info in manifest["files"].items():
            size = os.path.getsize(os.path.join(out_dir, info["file"]))
            rows.append({"graph": role, "file": os.path.join(out_dir, info["file"]),
                         "MB": size / 1e6, "sha256": info["sha256"][:12],
                         "inputs": ",".join(info["inputs"]), "outputs": ",".join(info["outputs"])})
        print(format_table(rows, title=f"ONNX export (opset {manifest['opset']}, "
                                       f"{manifest['kind']}), checked with onnx.checker"))
        payload = {"format": "onnx", "out_dir": out_dir, "manifest": manifest}
        if not args.no_verify:
            with bar.working(phase="onnxruntime vs torch"):
                err = _verify(model_dir, args.out)
            bar.update(1, phase="verified")
            print(f"onnxruntime vs torch, 8-step chunk on a random observation: max abs error "
                  f"{err:.2e} rad")
            payload["verify_max_abs_err_rad"] = err
        bar.close()
    else:
        from diffusion_controller.progress import Progress
        from diffusion_controller.runtime.tensorrt_backend import (
            DEFAULT_MAX_SAMPLES,
            build_engines,
        )

        args.max_samples = args.max_samples or DEFAULT_MAX_SAMPLES
        bar = Progress("export tensorrt", 1, "build", quiet=bool(getattr(args, "quiet", False)))
        with bar.working(phase="ONNX export (if stale) and engine builds (minutes each)"):
            engines = build_engines(model_dir, fp16=args.fp16, cache_dir=args.out,
                                    max_samples=args.max_samples)
        bar.update(1, phase="engines ready")
        bar.close()
        rows = [{"engine": role, "file": e["path"], "MB": len(e["engine"]) / 1e6,
                 "built_now": e["built"], "key": e["digest"][:12]} for role, e in engines.items()]
        print(format_table(rows, title=f"TensorRT engines ({'fp16' if args.fp16 else 'fp32'}, "
                                       f"K <= {args.max_samples})"))
        payload = {"format": "tensorrt", "fp16": args.fp16,
                   "engines": [{k: v for k, v in r.items()} for r in rows]}
    if args.json:
        write_json(args.json, payload)
    return 0
