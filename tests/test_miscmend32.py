"""Fixes of session 32's review of the misc range: a task file whose ``task`` comes from the
file it ``include:``s is accepted (it was refused before the run); the reference scorer does
not import ``datasets``; ``model_noise`` falls back on an unreadable ``schedule_eps``;
``corpus_stamp`` hashes no file outside the corpus folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from unmask.errors import UserError


@pytest.fixture
def find_tasks(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    tasks = pytest.importorskip("lm_eval.tasks")
    from unmask.lm_eval import find_tasks

    class NoTasks:  # lm-eval's index of its thousands of tasks takes ~15 s to build
        all_tasks: list[str] = []

        def __init__(self, **kw: object) -> None:
            pass

    monkeypatch.setattr(tasks, "TaskManager", NoTasks)
    return find_tasks


BASE = 'task: my_base\ndataset_path: json\noutput_type: loglikelihood\ndoc_to_text: "{{q}}"\n'


@pytest.mark.parametrize("variant", [
    "include: base.yaml\nnum_fewshot: 5\n",
    "include: [base.yaml]\nnum_fewshot: 5\n",
    "include: sub/../base.yaml\n",
])
def test_a_task_file_that_includes_its_task_is_accepted(
    tmp_path: Path, find_tasks, variant: str  # noqa: ANN001
) -> None:
    """lm-eval reads a task given as a path with ``include:`` resolved: a variant that takes
    ``task:`` from its base builds there, and was refused as "not an lm-eval task file"."""
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "sub").mkdir()
    path = tmp_path / "variant.yaml"
    path.write_text(variant)
    from lm_eval.tasks._index import TaskIndex  # lm-eval itself builds it

    assert TaskIndex.entry_from_path(path).name == "my_base"
    find_tasks([str(path)])  # no UserError


@pytest.mark.parametrize("base,variant,match", [
    ("a: 1\n", "include: base.yaml\n", r"not an lm-eval task file .*fields: a\)"),
    ("- 1\n", "include: base.yaml\n", r"not an lm-eval task file \(Expected YAML dict"),
    (BASE, "include: nothere.yaml\n", r"include .*nothere\.yaml: No such file"),
    ("a: [1\n", "include: base.yaml\n", r"include .*base\.yaml:2: not a valid task file"),
    (BASE, "include: variant.yaml\n", "Include cycle"),
])
def test_a_task_file_whose_includes_give_no_task_is_one_line(
    tmp_path: Path, find_tasks, base: str, variant: str, match: str  # noqa: ANN001
) -> None:
    (tmp_path / "base.yaml").write_text(base)
    path = tmp_path / "variant.yaml"
    path.write_text(variant)
    with pytest.raises(UserError, match=match) as e:
        find_tasks([str(path)])
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("onednn,amx,path", [
    (True, True, "amx"), (True, False, "onednn"), (False, False, "generic"),
    (False, True, "generic"),  # AMX under ONEDNN_MAX_CPU_ISA=AVX2: the generic kernel
])
def test_one_cpu_bf16_detection_answers_decoding_and_eval(
    monkeypatch: pytest.MonkeyPatch, onednn: bool, amx: bool, path: str
) -> None:
    """``--dtype auto`` (AMX: bf16 faster than fp32 at decoding) and ``unmask eval`` (oneDNN's
    kernels: bf16 not pathologically slow) read one detection. ``--dtype auto`` took bf16 on
    an AMX flag alone, where oneDNN's bf16 was off and bf16 ran 3.6x slower than fp32."""
    from unmask import api, parallel, report

    monkeypatch.setattr(parallel, "_onednn_bf16", lambda: onednn)
    monkeypatch.setattr(parallel, "_has_cpu_flag", lambda flag: amx and flag == "amx_bf16")
    monkeypatch.setattr(parallel, "cpu_bf16", parallel.cpu_bf16.__wrapped__)
    assert parallel.cpu_bf16() == path
    assert api.cpu_has_bf16_matmul() is (path == "amx")
    assert (report.cpu_bf16_note("bf16", "cpu") is None) is (path != "generic")


def test_the_cpu_flags_are_read_from_proc_cpuinfo(monkeypatch: pytest.MonkeyPatch) -> None:
    from unmask import parallel

    text = "processor\t: 0\nflags\t\t: fpu avx512f amx_bf16\nbugs\t\t: amx_bf17\n"
    monkeypatch.setattr(parallel.Path, "read_text", lambda self, **kw: text)
    assert parallel._has_cpu_flag("amx_bf16") and parallel._has_cpu_flag("avx512f")
    assert not parallel._has_cpu_flag("amx_bf17") and not parallel._has_cpu_flag("avx512")


def test_the_reference_scorer_does_not_import_datasets() -> None:
    """``ReferenceScorer.from_pretrained`` imported ``datasets`` (over a second) to turn its
    offline switch, which the scorer never reads: only lm-eval's tasks need it."""
    import importlib.util
    import os
    import subprocess
    import sys

    if importlib.util.find_spec("datasets") is None:
        pytest.skip("datasets is not installed: nothing could import it")
    code = (
        "import sys\n"
        "from unmask.scoring import ReferenceScorer\n"
        "ReferenceScorer._from_pretrained = classmethod(lambda cls, *a: None)\n"
        "ReferenceScorer.from_pretrained('ref')\n"
        "print(sorted(m for m in ('datasets', 'huggingface_hub.constants') if m in sys.modules))\n"
    )
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, check=True).stdout
    assert out.strip() == "['huggingface_hub.constants']"


@pytest.mark.parametrize("eps", [None, "0.01", [1e-3]])
def test_model_noise_of_a_sedd_config_whose_eps_is_no_number_is_the_default(eps: object) -> None:
    """A duck-typed config's ``schedule_eps=None`` raised ``TypeError`` in ``get_schedule``;
    ``model_noise`` gave the default log-linear noise for it before it read ``noise_of``."""
    from types import SimpleNamespace

    from unmask.sampling.sedd import model_noise
    from unmask.sedd import LogLinearNoise

    config = SimpleNamespace(objective="sedd", schedule="linear", schedule_eps=eps)
    noise = model_noise(config)
    assert isinstance(noise, LogLinearNoise)
    assert noise.eps == LogLinearNoise().eps


@pytest.mark.parametrize("name", ["../outside.bin", "ABSOLUTE", "sub/x.bin", 7])
def test_corpus_stamp_reads_no_file_an_index_names_outside_its_folder(
    tmp_path: Path, name: object
) -> None:
    """``corpus_stamp`` hashed every shard name of ``index.json`` below the folder: a crafted
    ``../outside.bin`` was read (a ``/dev/zero`` would never end). The data reader refuses such an
    index (``files.plain_name``); the stamp is None for it."""
    import json

    from unmask.distill import corpus_stamp

    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    (tmp_path / "outside.bin").write_bytes(b"secret")
    (folder / "sub" / "x.bin").write_bytes(b"x")
    (folder / "7").write_bytes(b"7")
    (folder / "train-00000.bin").write_bytes(b"\0" * 8)
    if name == "ABSOLUTE":
        name = str(tmp_path / "outside.bin")
    index = {"splits": {"train": {"shards": ["train-00000.bin", name]}}}
    (folder / "index.json").write_text(json.dumps(index))
    assert corpus_stamp(folder) is None
    index["splits"]["train"]["shards"] = ["train-00000.bin"]  # a plain name is stamped
    (folder / "index.json").write_text(json.dumps(index))
    assert [row[0] for row in corpus_stamp(folder)] == ["index.json", "train-00000.bin"]
