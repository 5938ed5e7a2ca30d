"""CPU vs GPU, host vs host: a trial is divided by the teacher measured in its own measurement context (hardware,
device, threads), and a front or a pick never mixes contexts. Placements are simulated: no GPU needed."""

from __future__ import annotations

import optuna
import pytest
import yaml

from orchestrator import pareto
from orchestrator.baselines import compared_baseline, context_tags, placement_contexts
from orchestrator.child_process import Placement
from orchestrator.contexts import main_front, pick_candidates
from orchestrator.record import set_trial, trial_record
from orchestrator.spec import SpecError, check_one_measuring_device, load_sweep
from trainers import metrics as M
from trainers.measure.context import context_of, measurement_context

CPU = "Intel(R) Xeon(R) Platinum 8480+"
GPU = "NVIDIA H200"
GPU_BOX = Placement(cores=[0, 1], gpu="0")  # an executor with a GPU
CPU_SHARE = Placement(cores=[2, 3])  # an executor on CPU cores only


def _spec(tmp_path, **space):
    doc = {"name": "ctx", "teacher": {"model": "some/model"}, "data": {"path": "data.csv"},
           "search_space": {"pruning_ratio": [0.0, 0.5], "precision": ["fp32"], **space}}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(doc))
    return load_sweep(path, check_hardware=False), path


def test_the_key_names_hardware_device_and_threads():
    gpu = measurement_context(device="cuda:0", threads=2, cpu_model=CPU, gpu_model=GPU)
    assert gpu == f"cuda|threads=2|cpu={CPU}|gpu={GPU}"
    assert measurement_context(device="cuda:1", threads=2, cpu_model=CPU, gpu_model=GPU) == gpu  # same GPU model
    cpu = measurement_context(device="cpu", threads=2, cpu_model=CPU, gpu_model=GPU)
    assert cpu == f"cpu|threads=2|cpu={CPU}"  # a CPU measurement does not depend on the GPU
    other_host = measurement_context(device="cpu", threads=2, cpu_model="AMD EPYC 9654")
    assert len({gpu, cpu, other_host, measurement_context(device="cpu", threads=4, cpu_model=CPU)}) == 4
    # rebuilt from a measurement's hardware tags when the tag itself is missing (older runs)
    assert context_of({"measure_device": "cpu", "measure_threads": "2", "hw_cpu_model": CPU}) == cpu


def test_a_grid_measured_on_two_devices_is_refused_with_the_fix_named(tmp_path):
    spec, path = _spec(tmp_path, runtime=["torch", "onnxruntime"])
    with pytest.raises(SpecError) as err:  # on a CUDA host: fp32/torch on the GPU, ONNX Runtime on the CPU
        check_one_measuring_device(spec, path, measure_device="cuda")
    message = str(err.value)
    assert f"{path}: field measure.device" in message and "cpu: fp32/onnxruntime" in message
    assert "cuda: fp32/torch" in message and "set measure.device: cpu" in message
    check_one_measuring_device(spec, path, measure_device="cpu")  # everything on the CPU: one device
    spec, path = _spec(tmp_path, precision=["fp32", "bf16"])
    check_one_measuring_device(spec, path, measure_device="cuda")  # all on the GPU


def _trial(study, context: str, baseline_context: str | None, acc: float, ms: float):
    trial = study.ask()
    set_trial(study, trial, metrics={M.VAL_ACCURACY: acc, M.LATENCY_P50_BS1: ms}, measurement_context=context,
              baseline_context=baseline_context)
    study.tell(trial, [acc, ms])


def test_two_placements_never_share_a_baseline_a_front_or_a_pick(tmp_path):
    spec, _ = _spec(tmp_path)
    devices = {"cuda", "cpu"}  # fp32 torch on the GPU, int8 on the CPU, say
    on_gpu = placement_contexts(GPU_BOX, 2, devices, cpu_model=CPU, gpu_model=GPU)
    on_cpu = placement_contexts(CPU_SHARE, 2, devices, cpu_model=CPU, gpu_model=None)
    gpu_ctx = next(c for c, d in on_gpu.items() if d == "cuda")
    cpu_ctx = next(c for c, d in on_cpu.items() if d == "cpu")
    assert gpu_ctx != cpu_ctx and cpu_ctx in on_gpu  # the GPU box's CPU-measured trials share the CPU teacher
    teacher = {gpu_ctx: {M.LATENCY_P50_BS1: 2.0, M.VAL_ACCURACY: 0.9},
               cpu_ctx: {M.LATENCY_P50_BS1: 20.0, M.VAL_ACCURACY: 0.9}}
    default = teacher[gpu_ctx]

    # each trial is divided by the teacher of its own context, never by the other device's
    assert compared_baseline(teacher, cpu_ctx, {}, 2, default) == (cpu_ctx, 2, teacher[cpu_ctx])
    assert compared_baseline(teacher, gpu_ctx, {}, 2, default)[2] is teacher[gpu_ctx]
    assert compared_baseline(teacher, "cpu|threads=2|cpu=other host", {}, 2, default)[0] is None  # said, not hidden
    assert context_tags("cpu|threads=2|cpu=other host", None)["sweep.baseline_context"] == "none"

    # real Optuna storage: two GPU trials, two CPU trials; the CPU ones are slower in ms but not comparable
    study = optuna.create_study(directions=["maximize", "minimize"])
    _trial(study, gpu_ctx, gpu_ctx, 0.90, 1.0)
    _trial(study, gpu_ctx, gpu_ctx, 0.85, 0.8)
    _trial(study, cpu_ctx, cpu_ctx, 0.92, 10.0)
    _trial(study, cpu_ctx, cpu_ctx, 0.80, 12.0)  # dominated within its own context
    context, front, others = main_front(study)
    numbers = sorted(t.number for t in front)
    assert {trial_record(t).measurement_context for t in front} == {context}, "a front mixes two contexts"
    assert context == gpu_ctx and numbers == [0, 1]  # tie on count: the context of the earlier trial
    assert {c: sorted(t.number for t in f) for c, f in others.items()} == {cpu_ctx: [2]}
    assert {trial_record(t).measurement_context for t in pick_candidates(study)} == {gpu_ctx}
    rows = pareto.rows(study.trials, default, by_context=teacher)
    assert [r.deltas[M.SPEEDUP_BS1] for r in rows] == [2.0, 2.5, 2.0, pytest.approx(20 / 12)]
    # Optuna's own front over everything would have mixed them: trial 2 (CPU) dominates nothing on the GPU front
    assert sorted(t.number for t in study.best_trials) == [0, 1, 2]

    from orchestrator.report import caption, front_report

    report = front_report(study, spec)
    assert sorted(t.number for t in report.front) == [0, 1] and report.context == gpu_ctx
    text = caption(report, default)
    assert f"measured in {gpu_ctx}" in text and f"trials measured in {cpu_ctx}" in text and "trials [2]" in text


def test_a_speedup_says_how_it_was_obtained_and_flags_two_sides_timed_under_different_load():
    from orchestrator.baselines import speedup_tags

    busy_teacher = {M.LATENCY_P50_BS1: 25.68, M.MEASURE_LOAD: 1.6}  # the held-out sweep: the machine was busy ...
    quiet_student = {M.LATENCY_P50_BS1: 3.49, M.MEASURE_LOAD: 0.1}  # ... while the student was timed quietly
    ctx = measurement_context(device="cpu", threads=2, cpu_model=CPU)
    tags = speedup_tags(quiet_student, busy_teacher, ctx)
    assert "not interleaved" in tags["sweep.speedup_method"] and ctx in tags["sweep.speedup_method"]
    assert tags["sweep.speedup_load"] == "load/core: trial 0.10, teacher 1.60"
    assert "timed under different load" in tags["sweep.speedup_flag"]
    assert "sweep.speedup_flag" not in speedup_tags({**quiet_student, M.MEASURE_LOAD: 1.4}, busy_teacher, ctx)
    assert speedup_tags({M.LATENCY_P50_BS1: 3.0}, busy_teacher, None)["sweep.speedup_load"].startswith("unknown")
