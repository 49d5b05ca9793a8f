"""Which ONNX export of a BERT run lets ONNX Runtime fuse attention, and what the fusion is worth.

    python scripts/probe_onnx_fusion.py runs/conll2003-ce --repeats 15

Exports the run's token classifier four ways: torch's dynamo exporter (what `seqlab export`
uses) and its older TorchScript exporter (``dynamo=False``, deprecated), each with the model's
``sdpa`` and ``eager`` attention. Each graph goes through ONNX Runtime's BERT fusions, then
dynamic per-channel int8 quantisation. Prints the fused operators found, the largest logit
difference to torch (float32, unmasked positions), and the median forward time of a batch of
64 x 24 (a typical length-grouped CoNLL-2003 batch), float32 and int8, all timed in the same
interleaved rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch


def export(model, path: Path, dynamo: bool, sample: dict) -> None:
    names = {"input_names": ["input_ids", "attention_mask"], "output_names": ["logits"]}
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
            program = torch.onnx.export(model, (), kwargs=sample, dynamo=True,
                                        dynamic_shapes={k: {0: batch, 1: seq}
                                                        for k in names["input_names"]}, **names)
            program.save(str(path))
        else:
            torch.onnx.export(model, (sample["input_ids"], sample["attention_mask"]), str(path),
                              dynamo=False, opset_version=17,
                              dynamic_axes={k: {0: "batch", 1: "sequence"}
                                            for k in [*names["input_names"], "logits"]}, **names)


def main(argv=None) -> int:
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model
    from transformers import AutoModelForTokenClassification

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", nargs="?", default="runs/conll2003-ce")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    logging.disable(logging.WARNING)
    g = torch.Generator().manual_seed(0)

    def sample(batch: int, length: int) -> dict[str, torch.Tensor]:
        ids = torch.randint(5, 30000, (batch, length), generator=g)
        mask = torch.ones_like(ids)
        mask[0, length // 2:] = 0  # one padded row, so that the mask matters
        return {"input_ids": ids, "attention_mask": mask}

    feed = sample(64, 24)
    valid = feed["attention_mask"].bool().numpy()
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    sessions, rows = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for exporter in ("dynamo", "torchscript"):
            for attention in ("sdpa", "eager"):
                name = f"{exporter}, {attention} attention"
                model = AutoModelForTokenClassification.from_pretrained(
                    args.run_dir, attn_implementation=attention).eval()
                path = Path(tmp) / f"{exporter}-{attention}.onnx"
                export(model, path, exporter == "dynamo", sample(2, 16))
                with contextlib.redirect_stdout(io.StringIO()):
                    fused = optimize_model(str(path), model_type="bert",
                                           num_heads=model.config.num_attention_heads,
                                           hidden_size=model.config.hidden_size)
                    fused.save_model_to_file(str(path))
                    quantize_dynamic(str(path), str(path.with_suffix(".int8.onnx")),
                                     weight_type=QuantType.QInt8, per_channel=True,
                                     extra_options={"DefaultTensorType": 1})  # float
                ops = {k: v for k, v in fused.get_fused_operator_statistics().items() if v}
                with torch.no_grad():
                    ref = model(**feed).logits.numpy()
                for precision, file in (("float32", path), ("int8", path.with_suffix(".int8.onnx"))):
                    sessions[(name, precision)] = ort.InferenceSession(
                        str(file), options, providers=["CPUExecutionProvider"])
                out = sessions[(name, "float32")].run(None, {k: v.numpy() for k, v in feed.items()})[0]
                rows.append((name, ops, float(np.abs(out - ref)[valid].max())))
        times: dict = {k: [] for k in sessions}
        arrays = {k: v.numpy() for k, v in feed.items()}
        for _ in range(args.repeats):
            for key, session in sessions.items():
                t0 = time.perf_counter()
                session.run(None, arrays)
                times[key].append(time.perf_counter() - t0)
    print(f"{args.run_dir}: batch 64 x 24, median of {args.repeats} interleaved runs, "
          f"onnxruntime {ort.__version__}, {args.threads} threads")
    print("| export | fused operators | float32 logits vs torch | float32 ms | int8 ms |")
    print("|---|---|---:|---:|---:|")
    for name, ops, diff in rows:
        ms = [1000 * statistics.median(times[(name, precision)]) for precision in ("float32", "int8")]
        fused_ops = ", ".join(f"{k} {v}" for k, v in sorted(ops.items()))
        print(f"| {name} | {fused_ops} | {diff:.1e} | {ms[0]:.1f} | {ms[1]:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
