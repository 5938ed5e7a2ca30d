"""Deployable students: portable folders at their precision, ONNX with parity, ONNX Runtime in the harness."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import BertConfig, BertForSequenceClassification

from trainers.deploy.inference import load_for_inference, runtime_unsupported_reason
from trainers.deploy.modeling_pruned import Int8Linear
from trainers.deploy.parity import PARITY_FILE, export_with_parity
from trainers.deploy.session import OrtClassifier
from trainers.measure.accuracy import evaluate
from trainers.measure.latency import measure_latency
from trainers.measure.memory import count_parameters, model_disk_mb
from trainers.pruning import PruningConfig, load_pruned, make_pruner, save_pruned
from trainers.pruning.plan import encoder_layers

TINY = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=64, num_labels=3)


def pruned_student(ratio: float = 0.5, seed: int = 0):
    torch.manual_seed(seed)
    model = BertForSequenceClassification(BertConfig(**TINY)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.3)
    pruner = make_pruner(model, ratio, PruningConfig(method="one_shot", ffn_round_to=8))
    pruner.prepare(model, None)
    return model, pruner.finalize(model)


def rows(n: int = 48, seq: int = 12, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 1000, (n, seq), generator=g)
    mask = torch.ones_like(ids)
    mask[: n // 2, seq - 4:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.randint(0, 3, (n,), generator=g)}


def logits(model, b) -> torch.Tensor:
    with torch.inference_mode():
        return model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.float()


CLEAN_LOAD = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification
    folder, inputs, out = sys.argv[1:4]
    b = torch.load(inputs, weights_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()
    with torch.inference_mode():
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.float()
    result = {"logits": logits.tolist(), "dtypes": sorted({str(p.dtype) for p in model.parameters()})}
    if os.path.exists(os.path.join(folder, "model.onnx")):
        import onnxruntime as ort
        session = ort.InferenceSession(os.path.join(folder, "model.onnx"), providers=["CPUExecutionProvider"])
        feeds = {k: b[k].numpy().astype(np.int64) for k in ("input_ids", "attention_mask")}
        result["onnx_logits"] = session.run(["logits"], feeds)[0].tolist()
    assert not any(m.split(".")[0] in ("trainers", "orchestrator") for m in sys.modules), "project imported"
    json.dump(result, open(out, "w"))
""")


def load_in_clean_process(folder: Path, b: dict, work: Path) -> dict:
    """Plain transformers in `python -I` (no PYTHONPATH, no user site), cwd outside the repository."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "load.py").write_text(CLEAN_LOAD)
    torch.save({k: v for k, v in b.items() if k != "labels"}, work / "inputs.pt")
    proc = subprocess.run([sys.executable, "-I", "load.py", str(folder), "inputs.pt", "out.json"], cwd=work,
                          capture_output=True, text=True, timeout=300, env={"PATH": "/usr/bin:/bin", "HOME": str(work)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((work / "out.json").read_text())


@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8"])
def test_saved_student_loads_with_plain_transformers_and_equal_logits(tmp_path, precision):
    model, plan = pruned_student()
    folder = save_pruned(model, None, plan, tmp_path / "student", precision=precision)
    ours, _ = load_pruned(folder)
    assert [len(lp.heads) for lp in plan.layers] == [l.attention.self.num_attention_heads for l in encoder_layers(ours)]
    b = rows()
    plain = load_in_clean_process(folder, b, tmp_path / "elsewhere")
    torch.testing.assert_close(torch.tensor(plain["logits"]), logits(ours, b), atol=1e-6, rtol=0)
    expected = {"fp32": ["torch.float32"], "bf16": ["torch.bfloat16"], "int8": ["torch.float32", "torch.int8"]}
    assert plain["dtypes"] == expected[precision]
    if precision == "fp32":  # the saved fp32 student is the trained one, bit for bit
        torch.testing.assert_close(logits(ours, b), logits(model, b), atol=0, rtol=0)


def test_weights_are_stored_at_the_students_precision(tmp_path):
    model, plan = pruned_student()
    sizes = {}
    for precision in ("fp32", "bf16", "int8"):
        folder = save_pruned(model, None, plan, tmp_path / precision, precision=precision)
        with safe_open(folder / "model.safetensors", framework="pt") as f:
            dtypes = {k: f.get_slice(k).get_dtype() for k in f.keys()}
        sizes[precision] = model_disk_mb(folder)
        if precision == "int8":
            assert dtypes["bert.encoder.layer.0.attention.self.query.weight"] == "I8"
            assert dtypes["bert.encoder.layer.1.output.dense.weight"] == "I8"
            assert dtypes["bert.embeddings.word_embeddings.weight"] == "I8"
            assert dtypes["bert.encoder.layer.0.attention.self.query.weight_scale"] == "F32"
        else:
            assert set(dtypes.values()) == {"F32" if precision == "fp32" else "BF16"}
    assert sizes["int8"] < 0.4 * sizes["fp32"]
    assert sizes["bf16"] < 0.55 * sizes["fp32"]


def test_folders_written_before_the_portable_format_still_load(tmp_path):
    model, plan = pruned_student()
    model.save_pretrained(tmp_path)  # the old layout: BertForSequenceClassification + pruned_shapes in config.json
    plan.save(tmp_path / "pruning_plan.json")
    old, _ = load_pruned(tmp_path)
    b = rows()
    torch.testing.assert_close(logits(old, b), logits(model, b), atol=0, rtol=0)


def test_onnx_export_matches_torch_with_dynamic_axes_and_records_parity(tmp_path):
    model, plan = pruned_student()
    folder = save_pruned(model, None, plan, tmp_path / "s")
    b = rows()
    record = export_with_parity(model, folder, [b], threads=1)
    assert json.loads((folder / PARITY_FILE).read_text()) == record
    assert record["rows"] == 48 and record["fp32"]["max_abs_logit_diff"] <= 1e-4 and record["int8"]["ok"]
    session = OrtClassifier(folder / "model.onnx", model.config, threads=1)
    for n, seq in ((1, 5), (5, 23)):  # batch and sequence are dynamic axes
        other = rows(n, seq, seed=n)
        torch.testing.assert_close(logits(session, other), logits(model, other), atol=1e-4, rtol=0)


def test_both_exporters_write_the_same_function_and_leave_the_model_as_it_was(tmp_path):
    """The TorchScript exporter (the fast default) once left every submodule in training mode (dropout on in
    every later torch forward): the model's mode and logits are what they were before either export."""
    from trainers.deploy.onnx_export import export_onnx, exporter_of

    model, _ = pruned_student()
    b = rows(6, 10, seed=6)
    before = logits(model, b)
    for exporter in ("torchscript", "dynamo"):
        path = export_onnx(model, tmp_path / f"{exporter}.onnx", exporter=exporter)
        assert exporter_of(path) == exporter and not model.training
        torch.testing.assert_close(logits(model, b), before, atol=0, rtol=0)
        session = OrtClassifier(path, model.config, threads=1)
        for n, seq in ((1, 5), (6, 10), (3, 23)):
            other = rows(n, seq, seed=n)
            torch.testing.assert_close(logits(session, other), logits(model, other), atol=1e-4, rtol=0)
    assert exporter_of(export_onnx(model, tmp_path / "auto.onnx")) == "torchscript"
    with pytest.raises(ValueError, match="exporter 'jit'"):
        export_onnx(model, tmp_path / "x.onnx", exporter="jit")


def test_a_traced_graph_that_disagrees_with_torch_is_exported_again_through_torch_export(tmp_path, monkeypatch):
    """A trace can bake in a branch taken at the example shape; the parity check catches it and the record
    says so. Here the trace is made to write another model's graph (fault injected at the trace)."""
    from trainers.deploy import onnx_export

    model, plan = pruned_student()
    other, _ = pruned_student(seed=1)
    real = onnx_export._export_torchscript
    monkeypatch.setattr(onnx_export, "_export_torchscript", lambda m, path, **kw: real(other, path, **kw))
    folder = save_pruned(model, None, plan, tmp_path / "s")
    record = export_with_parity(model, folder, [rows()], threads=1)
    assert record["exporter"] == "dynamo" and record["fp32"]["ok"] and "re-exported" in record["retraced"]
    assert json.loads((folder / PARITY_FILE).read_text())["exporter"] == "dynamo"


def test_onnxruntime_session_is_measured_by_the_same_harness(tmp_path):
    model, plan = pruned_student()
    folder = save_pruned(model, None, plan, tmp_path / "s")
    b = rows()
    graph_bytes = {}
    for precision in ("fp32", "int8"):
        served = load_for_inference(folder, precision, "onnxruntime", threads=1)
        assert isinstance(served, OrtClassifier) and served.session.get_session_options().intra_op_num_threads == 1
        assert evaluate(served, [b], num_labels=3)["num_examples"] == 48
        assert measure_latency(served, batch_size=2, seq_len=8, min_repeats=2, max_repeats=3).repeats >= 2
        assert count_parameters(served) > 0
        # the graph's weights count at their stored size (int8 graph smaller), and the allocator profiler,
        # blind to ONNX Runtime's arena, leaves the activations to the caller instead of failing
        from trainers.measure.memory import measure_model_memory, weight_bytes

        graph_bytes[precision] = weight_bytes(served)
        mem = measure_model_memory(served, batch_size=2, seq_len=8, vocab_size=model.config.vocab_size)
        assert mem.weights_bytes == graph_bytes[precision] and "measured by the caller" in mem.method
    assert 0 < graph_bytes["int8"] < 0.5 * graph_bytes["fp32"]
    fp32_torch = load_for_inference(folder, "fp32", "torch")
    assert evaluate(fp32_torch, [b], num_labels=3) == evaluate(load_for_inference(folder, "fp32", "onnxruntime"), [b],
                                                                num_labels=3)
    int8_torch = load_for_inference(folder, "int8", "torch")
    assert any(isinstance(m, Int8Linear) for m in int8_torch.modules())


def test_impossible_runtime_combinations_are_named_before_loading(tmp_path):
    assert "bf16" in runtime_unsupported_reason("onnxruntime", "bf16")
    assert "unknown runtime" in runtime_unsupported_reason("tensorrt", "fp32")
    assert runtime_unsupported_reason("onnxruntime", "int8") is None
    with pytest.raises(ValueError, match="onnxruntime with precision bf16"):
        load_for_inference(tmp_path / "nothing-there", "bf16", "onnxruntime")


def test_an_int8_folder_exports_the_values_its_int8_weights_hold(tmp_path):
    model, plan = pruned_student()
    folder = save_pruned(model, None, plan, tmp_path / "s", precision="int8")
    served = load_for_inference(folder, "fp32", "onnxruntime", threads=1)  # model.onnx made on first use
    assert (folder / "model.onnx").exists()
    from trainers.deploy.onnx_export import dequantised

    int8_model, _ = load_pruned(folder)
    b = rows()
    torch.testing.assert_close(logits(served, b), logits(dequantised(int8_model), b), atol=1e-4, rtol=0)
    assert not torch.equal(logits(served, b), logits(model, b))  # the int8 values, not the trained fp32 ones


def test_export_paths_become_relative_to_the_export_folder(tmp_path):
    from orchestrator.export import relative_to

    base = tmp_path / "exports" / "demo"
    doc = {"teacher_dir": str(tmp_path / "mlruns" / "cache" / "t"), "uri": f"sqlite:///{tmp_path}/mlruns/mlflow.db",
           "nested": [{"p": str(base / "model")}], "n": 3, "plain": "fp32"}
    assert relative_to(doc, base) == {"teacher_dir": "../../mlruns/cache/t", "uri": "sqlite:///../../mlruns/mlflow.db",
                                      "nested": [{"p": "model"}], "n": 3, "plain": "fp32"}


def test_trial_config_takes_a_runtime():
    from pydantic import ValidationError

    from trainers.config import TrialConfig

    base = {"teacher_dir": "t", "data": {"path": "d.csv"}}
    assert TrialConfig.model_validate(base).runtime == "torch"
    assert TrialConfig.model_validate({**base, "runtime": "onnxruntime"}).runtime == "onnxruntime"
    with pytest.raises(ValidationError, match="runtime"):
        TrialConfig.model_validate({**base, "runtime": "tensorrt"})


def test_a_folder_is_rebuilt_without_initialising_or_quantising_what_its_weights_replace(tmp_path, monkeypatch):
    from trainers.deploy.folder import build_portable
    from trainers.families.int8 import Int8Embedding, Int8Linear

    model, plan = pruned_student()
    folder = save_pruned(model, None, plan, tmp_path / "s", precision="int8")
    calls = []
    real = torch.nn.init.normal_
    monkeypatch.setattr(torch.nn.init, "normal_", lambda t, *a, **k: calls.append(t.shape) or real(t, *a, **k))
    skeleton = build_portable(folder)
    assert not calls  # no random initialisation that the loaded weights would overwrite
    int8 = [m for m in skeleton.modules() if isinstance(m, (Int8Linear, Int8Embedding))]
    assert int8 and all(not m.weight.any() for m in int8)  # int8 modules of the right shapes, nothing quantised
    loaded, _ = load_pruned(folder)
    b = rows()
    torch.testing.assert_close(logits(loaded, b), logits(load_pruned(folder)[0], b), atol=0, rtol=0)
    assert not any(not m.weight.any() for m in loaded.modules() if isinstance(m, (Int8Linear, Int8Embedding)))
