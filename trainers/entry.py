"""The child process's entry point: `python -m trainers.entry {prepare|trial|measure} JOB RESULT`.

The orchestrator starts one such process per job (`orchestrator/child_process.py`); the job and
result documents are `trainers/jobs.py`.

Whatever goes wrong, the worker tries to leave a RESULT saying what; a worker that cannot (killed,
out of memory) is diagnosed by the orchestrator from its exit status and log.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

import yaml


def _log(msg: str) -> None:
    print(msg, flush=True)


def prepare(job_path: Path):
    from trainers.data import fingerprint
    from trainers.jobs import PrepareJob, PrepareResult
    from trainers.measure import track_emissions
    from trainers.precision import resolve_device
    from trainers.progress import BASELINE, DATA_REPORT_FILE, ProgressReporter
    from trainers.teacher import oneoff_costs, prepare_teacher, prepare_trimmed_teacher
    from trainers.inputs import load_and_encode
    from transformers import AutoTokenizer

    job = PrepareJob.model_validate_json(job_path.read_text())
    device = resolve_device(job.training.device)
    tokenizer = AutoTokenizer.from_pretrained(job.teacher_ref)
    loaded, encoded = load_and_encode(job.data, job.data_base_dir, tokenizer,
                                      max_seq_len=job.training.max_seq_len, cache_dir=job.cache_dir / "data",
                                      report_truncation=True)
    report_text = loaded.report.render()
    _log(report_text)
    job.output_dir.mkdir(parents=True, exist_ok=True)
    (job.output_dir / DATA_REPORT_FILE).write_text(report_text)  # shown before the teacher trains
    build = job.published_teacher is None  # a worker uses the teacher the launching machine published
    if not build:
        import socket

        from trainers.teacher import check_published, teacher_key

        check_published(job.published_teacher, teacher_key(job.teacher_ref, job.teacher, fingerprint(loaded), job.training,
                                                         device=device),
                        fingerprint(loaded), socket.gethostname())
    teacher = prepare_teacher(
        job.teacher_ref, job.teacher, label_names=loaded.label_names, encoded=encoded,
        data_fingerprint=fingerprint(loaded), training=job.training, cache_root=job.cache_dir / "teachers",
        device=device, emissions=lambda phase: track_emissions(phase, job.measure), log=_log,
        progress_dir=job.output_dir, build=build,
    )
    result = PrepareResult(
        label_names=loaded.label_names, data_report=loaded.report.to_dict(), data_report_text=report_text,
        data_fingerprint=fingerprint(loaded), teacher_dir=str(teacher.model_dir),
        teacher_logits=str(teacher.logits_path), teacher_key=teacher.key, teacher_built_now=teacher.built_now,
        teacher_meta=teacher.meta,
    )
    result.oneoff_metrics, result.oneoff_tags = oneoff_costs(teacher.meta, built_now=teacher.built_now)
    if job.vocabulary.trim != "none":  # students of the `trimmed` vocabulary start from this teacher instead
        trimmed = prepare_trimmed_teacher(teacher, job.vocabulary, loaded=loaded, base_dir=job.data_base_dir,
                                          training=job.training, data_cache_dir=job.cache_dir / "data", device=device,
                                          log=_log, build=build)
        result.trimmed_teacher_dir, result.trimmed_teacher_logits = str(trimmed.model_dir), str(trimmed.logits_path)
        result.vocabulary_metrics = dict(trimmed.meta.get("vocabulary", {}).get("metrics", {}))
    if job.measure_baseline:
        from trainers.measure.predictions import PREDICTIONS_FILE
        from trainers.measuring import measure_in_fresh_process

        baseline = ProgressReporter(job.output_dir, BASELINE)
        baseline.on_step(0, 1, 0.0)
        measured = measure_in_fresh_process(teacher.model_dir, job.data, job.data_base_dir, job.measure,
                                 max_seq_len=job.training.max_seq_len, cache_dir=job.cache_dir / "data",
                                 batch_size=job.training.eval_batch_size, precision="fp32",
                                 log_path=job.output_dir / "measure.log",
                                 predictions_out=job.output_dir / PREDICTIONS_FILE)
        baseline.end(1, 1)
        result.baseline_metrics = dict(measured.metrics)
        result.baseline_tags = {**measured.tags, "precision_measured": "fp32"}
        result.baseline_per_class_f1 = measured.per_class_f1
        result.baseline_val_per_class_f1 = measured.val_per_class_f1
        result.baseline_predictions = str(job.output_dir / PREDICTIONS_FILE)
    return result


def measure(job_path: Path):
    from trainers.jobs import MeasureJob
    from trainers.measuring import measure_saved_folder

    job = MeasureJob.model_validate_json(job_path.read_text())
    return measure_saved_folder(job.model_dir, job.data, job.data_base_dir, job.measure, max_seq_len=job.max_seq_len,
                                cache_dir=job.cache_dir, batch_size=job.batch_size, precision=job.precision,
                                runtime=job.runtime, predictions_out=job.predictions_out)


def trial(job_path: Path):
    from trainers.config import TrialConfig
    from trainers.trial import run_trial

    raw = yaml.safe_load(job_path.read_text())
    return run_trial(TrialConfig.model_validate(raw), log=_log)


KINDS = {"prepare": prepare, "trial": trial, "measure": measure}


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in KINDS:
        print("usage: python -m trainers.entry {prepare|trial|measure} JOB RESULT", file=sys.stderr)
        return 2
    kind, job_path, result_path = argv[0], Path(argv[1]), Path(argv[2])
    from trainers.jobs import MeasureResult, PrepareResult, TrialResult

    try:
        result = KINDS[kind](job_path)
        code = 0
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - reported in the result, the sweep goes on
        traceback.print_exc()
        message = f"{type(exc).__name__}: {exc}"
        result = {"prepare": PrepareResult, "trial": TrialResult, "measure": MeasureResult}[kind](ok=False, error=message)
        code = 1
    tmp = result_path.with_suffix(".tmp")
    tmp.write_text(result.model_dump_json(indent=2))
    tmp.replace(result_path)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
