"""benchmarks/gpu_verify.sh, the one-call GPU check: its cheap properties (syntax, --help, --plan,
budgets, test selections, exit codes). The whole dry run (~4 min) is CI's own step:
``bash benchmarks/gpu_verify.sh --dry-run``."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests._cuda_backends import CudaBackend, needs_emulation

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_verify.sh"
PHASES = ["env", "build", "tests", "sanitize", "bench"]
FILES = ["gpu_verify.log", "environment.txt", "tests.txt", "sanitizer.txt", "deform_conv2d.json", "mixconv.json",
         "losses.json", "latency.json"]
DEVICE_CALL_S = 540  # 9 of the device tool's 10 minutes per command


def _run(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHON": sys.executable, **(env or {})})


def _plan(*args: str, tmp_path: Path) -> str:
    out = tmp_path / "out"
    res = _run("--plan", *args, env={"OUT": str(out)})
    assert res.returncode == 0, res.stderr
    assert not out.exists()  # --plan runs nothing and writes nothing
    return res.stdout


def test_bash_syntax():
    res = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_help_documents_usage_phases_budgets_and_files():
    res = _run("--help")
    assert res.returncode == 0
    text = res.stdout
    for needle in ["--dry-run", "--plan", "--phases", "OUT", "GPU_VERIFY_DEADLINE", "compute-sanitizer",
                   "memcheck", "racecheck", "HYBRIDOPS_EMU_ORDER=reverse", "benchmarks/results/", "Exit status",
                   *PHASES, *FILES]:
        assert needle in text, needle
    assert not text.startswith("#!")


@pytest.mark.parametrize("args", [["--bogus"], ["--phases", "build,lint"], ["--phases"]])
def test_bad_arguments_are_refused(args):
    res = _run(*args, "--plan")
    assert res.returncode == 64 and "gpu_verify:" in res.stderr and "Traceback" not in res.stderr


def test_bad_deadline_is_refused():
    res = _run("--plan", env={"GPU_VERIFY_DEADLINE": "9m"})
    assert res.returncode == 64 and "GPU_VERIFY_DEADLINE must be whole seconds, got '9m'" in res.stderr


@pytest.mark.parametrize("dry", [False, True], ids=["gpu", "dry-run"])
def test_plan_budgets_fit_one_device_call(dry, tmp_path):
    plan = _plan(*(["--dry-run"] if dry else []), tmp_path=tmp_path)
    caps = re.findall(r"^  (\w+) +cap +(\d+) s", plan, re.M)
    assert [name for name, _ in caps] == PHASES
    deadline = int(re.search(r"deadline (\d+) s;", plan).group(1))
    total = sum(int(cap) for _, cap in caps)
    assert total <= deadline <= DEVICE_CALL_S
    assert f"caps sum to {total} s" in plan
    if dry:
        assert deadline <= 240  # the dry run: about 4 minutes on CI's 2 cores
        assert "STAND-IN" in plan and "--device cpu" in plan and "prints, does not run" in plan
    else:
        assert "--tool memcheck" in plan and "--tool racecheck" in plan and "--device cuda" in plan
    files = re.search(r"^  files: (.*)$", plan, re.M).group(1).split()
    assert files == FILES and len(files) <= 8


def _sanitizer_ids(plan: str) -> list[str]:
    return re.findall(r"^ {12}(tests/\S+::\S+)$", plan, re.M)


def test_plan_selections_name_existing_tests(tmp_path):
    """The curated sanitizer ids exist on both backends, and each -k selection collects tests."""
    gpu, dry = _plan(tmp_path=tmp_path), _plan("--dry-run", tmp_path=tmp_path)
    ids = _sanitizer_ids(gpu) + _sanitizer_ids(dry)
    assert ids and all("[cuda-" in i for i in _sanitizer_ids(gpu)) and all("[emu-" in i for i in _sanitizer_ids(dry))
    res = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *ids],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stdout[-2000:]
    assert sorted(line for line in res.stdout.splitlines() if "::" in line) == sorted(ids)
    for plan, minimum in ((gpu, 100), (dry, 100)):
        k = re.search(r'-v tests -k "(.*)"$', plan, re.M).group(1)
        res = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                              "tests", "-k", k], capture_output=True, text=True, cwd=ROOT, timeout=120)
        collected = [line for line in res.stdout.splitlines() if "::" in line]
        assert res.returncode == 0 and len(collected) >= minimum, (k, res.stdout[-1000:])
        backends = set(re.findall(r"\[(cuda|emu-sm61|emu-h100)-", "\n".join(collected)))
        assert backends == ({"cuda"} if plan is gpu else {"emu-sm61", "emu-h100"})


def test_a_failing_phase_fails_the_run(tmp_path):
    """A python that fails: env and the build check fail, the run stops there with exit 1, the step
    table is the log's tail and the files stay within the 8 the device tool returns."""
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'no python here' >&2\nexit 3\n")
    fake.chmod(0o755)
    out = tmp_path / "out"
    res = _run("--dry-run", env={"OUT": str(out), "PYTHON": str(fake)})
    assert res.returncode == 1, res.stdout[-2000:]
    log = (out / "gpu_verify.log").read_text()
    assert re.search(r"^env-python +FAILED", log, re.M) and re.search(r"^build-check +FAILED", log, re.M)
    assert "exit 1 (a step FAILED)" in log.splitlines()[-1]
    assert "no python here" in (out / "environment.txt").read_text()
    assert len(list(out.iterdir())) <= 8 and not (out / "tests.txt").exists()


def test_dry_run_env_and_build_check_pass(tmp_path):
    """The dry run's first two phases on this build (needs hybridops._C_emu): exit 0, nothing built."""
    out = tmp_path / "out"
    res = _run("--dry-run", "--phases", "build", env={"OUT": str(out)}, timeout=120)
    log = (out / "gpu_verify.log").read_text()
    if "cuda_emulation\"] is False" in (out / "environment.txt").read_text():
        pytest.skip("hybridops built without HYBRIDOPS_BUILD_CUDA_EMU=1")
    assert res.returncode == 0, log[-3000:]
    assert "the GPU run builds with: TORCH_CUDA_ARCH_LIST=<device arch> HYBRIDOPS_BUILD_CUDA=1" in log
    assert re.search(r"^build-check +ok", log, re.M) and "exit 0 (all complete)" in log.splitlines()[-1]
    assert sorted(p.name for p in out.iterdir()) == ["environment.txt", "gpu_verify.log"]


@needs_emulation
def test_emu_order_from_the_environment_reaches_the_cuda_tests(monkeypatch):
    """The dry run's sanitizer stand-in sets HYBRIDOPS_EMU_ORDER=reverse for the whole pytest run: the
    CUDA tests' backend must keep it instead of forcing the forward order."""
    backend = CudaBackend("emu-sm61", "cpu", "sm61")
    monkeypatch.setenv("HYBRIDOPS_EMU_ORDER", "reverse")
    with backend.active():
        assert os.environ["HYBRIDOPS_EMU_ORDER"] == "reverse"
    with backend.active("forward"):  # an explicit order still wins
        assert os.environ["HYBRIDOPS_EMU_ORDER"] == "forward"
    assert os.environ["HYBRIDOPS_EMU_ORDER"] == "reverse"
    monkeypatch.delenv("HYBRIDOPS_EMU_ORDER")
    with backend.active():
        assert os.environ["HYBRIDOPS_EMU_ORDER"] == "forward"
