"""``seqlab export``: a trained run to ONNX, and an ONNX Runtime model that prediction can use.

An exported directory is self-contained: ``model.onnx`` (dynamic batch and sequence axes),
the tokenizer, ``config.json``, ``config.yaml``, ``seqlab.json`` and ``export.json`` (the seqlab
version, the precision, and the largest logit difference against torch measured at export).
The task says what the model takes (its inputs) and the head what it returns (its outputs).
``seqlab predict DIR --backend onnxruntime`` and ``seqlab evaluate`` read it; given a run
directory instead, they export it once into a cache keyed by the run's weights
(``$SEQLAB_CACHE``, else ``~/.cache/seqlab``) and reuse that export afterwards.

BERT encoders get ONNX Runtime's transformer fusions. The export checks itself: float32 ONNX
logits must equal torch's to :data:`TOLERANCE` on a sample, else nothing is written.
``--quantize int8`` applies ONNX Runtime's dynamic quantisation (int8 weights of the linear
layers, per output channel) to the checked float32 graph.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import torch

from . import __version__
from .errors import SeqlabError
from .files import check_output_dir, write_json

TOLERANCE = 1e-4  # largest absolute logit difference, float32 ONNX against torch
ONNX_FILE = "model.onnx"
EXPORT_FILE = "export.json"
_INSTALL = "pip install 'seqlab[onnx]' (onnx, onnxruntime, onnxscript)"


def _require(*modules: str) -> None:
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise SeqlabError(f"ONNX export and the onnxruntime backend need {', '.join(missing)}: "
                          f"{_INSTALL}")


def is_exported(directory: str | Path) -> bool:
    return (Path(directory) / EXPORT_FILE).is_file()


def _head(meta: dict):
    """The head class of a run (runs made before heads were named have the task's default)."""
    from .heads import get_head
    from .tasks import get_task

    return get_head(meta.get("head") or get_task(meta["task"]).default_head)


def _load_torch_model(run: Path, meta: dict):
    return _head(meta).load_model(run, meta)


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter's and the quantiser's progress lines and warnings (about torchvision
    operators, pre-processing) are not the user's business: keep them off the terminal."""
    loggers = [logging.getLogger(), logging.getLogger("torch.onnx")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _optimize(path: Path, config) -> str | None:
    """ONNX Runtime's transformer fusions (LayerNorm with its residual, bias with GELU) for BERT
    encoders, in place; other architectures stay as exported. Returns why the fusions were not
    applied (None when they were); the unfused graph is correct, only slower, and the export's
    check runs on whichever graph is kept."""
    if getattr(config, "model_type", None) != "bert":
        return f"no fusions for model type {getattr(config, 'model_type', None)!r}"
    from onnxruntime.transformers.optimizer import optimize_model

    try:
        with _quiet_exporter():
            optimized = optimize_model(str(path), model_type="bert",
                                       num_heads=config.num_attention_heads,
                                       hidden_size=config.hidden_size)
            optimized.save_model_to_file(str(path))
    except (OSError, ValueError, RuntimeError, KeyError, AttributeError) as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return None


def export(run_dir: str | Path, output: str | Path | None = None, *,
           quantize: str | None = None) -> Path:
    """Export a finished run to ONNX (and check it); return the exported directory.

    Raises:
        SeqlabError: an incomplete or unknown directory, a missing optional dependency, an
            occupied output directory, or ONNX logits that differ from torch's.
    """
    run = Path(run_dir)
    if run.name.endswith(".incomplete") or not (run / "seqlab.json").is_file():
        raise SeqlabError(f"{run}: not a finished seqlab run (no seqlab.json); export the "
                          "output_dir of a completed `seqlab train`")
    if is_exported(run):
        raise SeqlabError(f"{run}: already an exported directory")
    if not any((run / f).is_file() for f in ("model.safetensors", "pytorch_model.bin")):
        raise SeqlabError(f"{run}: no model weights (was it trained with train.save_model=false?)")
    if quantize not in (None, "int8"):
        raise SeqlabError(f"--quantize: expected int8, got {quantize!r}")
    out = Path(output) if output else run.with_name(run.name + (f"-onnx-{quantize}" if quantize
                                                                 else "-onnx"))
    check_output_dir(out)
    if out.exists() and any(out.iterdir()):
        raise SeqlabError(f"--output {out}: exists and is not empty")
    _require("onnx", "onnxruntime", "onnxscript")
    from .tasks import get_task

    meta = json.loads((run / "seqlab.json").read_text(encoding="utf-8"))
    model = _load_torch_model(run, meta).eval()
    names = list(_head(meta).output_names)
    inputs = get_task(meta["task"]).model_inputs(model.config)

    g = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size

    def sample(batch: int, length: int) -> dict[str, torch.Tensor]:
        ids = torch.randint(5, vocab, (batch, length), generator=g)
        feed = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        if "token_type_ids" in inputs:
            feed["token_type_ids"] = torch.zeros_like(ids)
        return feed

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        staging = Path(tmp) / "export"
        staging.mkdir()
        batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
        with _quiet_exporter():
            program = torch.onnx.export(
                model, (), kwargs=sample(2, 16), dynamo=True, input_names=inputs,
                output_names=names, dynamic_shapes={k: {0: batch, 1: seq} for k in inputs},
                verbose=False)
            program.save(str(staging / ONNX_FILE))
        unfused = _optimize(staging / ONNX_FILE, model.config)
        check = sample(3, 37)  # other sizes than traced
        onnx_out = OrtModel(staging, check_version=False, meta=meta)._run(check)
        with torch.no_grad():
            ref = model(**check)
        diff = max(float((torch.from_numpy(onnx_out[n]) - getattr(ref, n)).abs().max())
                   for n in names)
        if not diff <= TOLERANCE:
            raise SeqlabError(f"the ONNX model's logits differ from torch's by {diff:.3g} "
                              f"(more than {TOLERANCE}); nothing was written")
        record = {"seqlab_version": __version__, "task": meta["task"], "precision": "float32",
                  "max_abs_logit_diff_vs_torch": diff, "tolerance": TOLERANCE,
                  "inputs": inputs, "outputs": names,
                  "fusions": "ONNX Runtime's BERT fusions" if unfused is None else
                  f"none ({unfused})"}
        if quantize == "int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            fp32 = staging / "model.fp32.onnx"
            (staging / ONNX_FILE).rename(fp32)
            with _quiet_exporter():
                # per channel: 85.78 against 85.90 test F1 on CoNLL-2003, where per tensor lost
                # 1.2 points (scripts/bench_onnx.py)
                quantize_dynamic(str(fp32), str(staging / ONNX_FILE), weight_type=QuantType.QInt8,
                                 per_channel=True)
            fp32.unlink()
            int8_out = OrtModel(staging, check_version=False, meta=meta)._run(check)
            record.update(precision="int8 (dynamic quantisation of the weights, per channel)",
                          max_abs_logit_diff_vs_torch_int8=max(
                              float((torch.from_numpy(int8_out[n]) - getattr(ref, n)).abs().max())
                              for n in names))
        for f in ("seqlab.json", "config.yaml", "config.json"):
            shutil.copy(run / f, staging / f)
        from .models import load_tokenizer

        load_tokenizer(str(run)).save_pretrained(staging)
        write_json(staging / EXPORT_FILE, record)
        if out.exists():
            out.rmdir()
        shutil.move(str(staging), str(out))
    return out


class _Output(dict):
    """Model outputs (and config keys) by attribute, as transformers' are read."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class OrtModel:
    """An exported model behind an ONNX Runtime session, called like the transformers model it
    came from (``model(input_ids=..., attention_mask=...)``, outputs as torch tensors)."""

    training = False

    device = torch.device("cpu")  # ONNX Runtime's CPU provider: inputs and outputs live here

    def __init__(self, directory: str | Path, *, threads: int | None = None,
                 check_version: bool = True, meta: dict | None = None):
        _require("onnxruntime")
        import onnxruntime as ort

        directory = Path(directory)
        if check_version:
            record = json.loads((directory / EXPORT_FILE).read_text(encoding="utf-8"))
            if record.get("seqlab_version") != __version__:
                raise SeqlabError(f"{directory}: exported by seqlab {record.get('seqlab_version')}, "
                                  f"this is {__version__}: export the run again")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(directory / ONNX_FILE), options,
                                            providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]
        config = directory / "config.json"
        self.config = _Output(json.loads(config.read_text(encoding="utf-8"))) if config.is_file() \
            else _Output()

    def _run(self, feed: dict[str, torch.Tensor]) -> dict:
        ids = feed["input_ids"]
        arrays = {"input_ids": ids.numpy(),
                  "attention_mask": (feed.get("attention_mask") if feed.get("attention_mask")
                                     is not None else torch.ones_like(ids)).numpy()}
        if "token_type_ids" in self.inputs:
            tt = feed.get("token_type_ids")
            arrays["token_type_ids"] = (tt if tt is not None else torch.zeros_like(ids)).numpy()
        return dict(zip(self.outputs, self.session.run(self.outputs, arrays)))

    def __call__(self, **feed) -> _Output:
        return _Output({k: torch.from_numpy(v) for k, v in self._run(feed).items()})

    def eval(self):
        return self

    def train(self, mode: bool = True):
        return self


def cache_dir() -> Path:
    """Where on-the-fly exports are kept: ``$SEQLAB_CACHE/onnx``, else ``~/.cache/seqlab/onnx``."""
    root = os.environ.get("SEQLAB_CACHE") or Path.home() / ".cache" / "seqlab"
    return Path(root) / "onnx"


def _weights_key(run: Path) -> str:
    """A key for a run's weights and what prediction reads beside them: the files' sizes,
    modification times and the first MiB of the weights, hashed (no full read of the weights)."""
    h = hashlib.sha1(__version__.encode())
    for name in ("model.safetensors", "pytorch_model.bin", "config.json", "seqlab.json"):
        f = run / name
        if f.is_file():
            st = f.stat()
            h.update(f"{name}:{st.st_size}:{st.st_mtime_ns}".encode())
            with open(f, "rb") as fh:
                h.update(fh.read(1 << 20))
    return h.hexdigest()[:20]


def cached_export(run: Path) -> Path:
    """The ONNX export of a run from the cache, made there on first use."""
    target = cache_dir() / _weights_key(run)
    if is_exported(target):
        return target
    print(f"seqlab: exporting {run} to ONNX once (kept in {target}; `seqlab export` writes it "
          "where you choose)", file=sys.stderr)
    if target.exists():  # an export that was interrupted
        shutil.rmtree(target)
    return export(run, target)


def prediction_model(run, opts):
    """The model ``seqlab predict`` / ``evaluate`` run: torch, or ONNX Runtime
    (``opts.backend == "onnxruntime"``) from an exported directory or a run's cached export."""
    directory = Path(run.directory)
    if opts.backend == "onnxruntime":
        if is_exported(directory):
            return OrtModel(directory, threads=opts.threads)
        return OrtModel(cached_export(directory), threads=opts.threads)
    if is_exported(directory):
        raise SeqlabError(f"{directory}: an exported ONNX directory; use --backend onnxruntime")
    if opts.threads:
        import torch

        torch.set_num_threads(opts.threads)  # e.g. 1 beside a training run on a busy core
    return _load_torch_model(directory, run.meta)
