"""``.ci/compile_sm61.sh`` (the Pascal/Volta/Turing compile check CI runs) and its ptxas report parser
``.ci/ptxas_table.py``. Nothing here downloads or compiles: ``--help`` and argument errors must answer
before the script touches its cache, and the parser is fed a captured ptxas 12.9 ``-v`` log."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / ".ci" / "compile_sm61.sh"


def _run_script(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """The script with a bare PATH and its cache under ``tmp_path/cache`` (which must stay absent)."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HYBRIDOPS_SM61_CACHE": str(tmp_path / "cache")}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=60, env=env)


def _load_parser():
    spec = importlib.util.spec_from_file_location("ptxas_table", REPO / ".ci" / "ptxas_table.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


# Captured from `ptxas -arch=sm_61 -v` (CUDA 12.9.86) on clang-16's PTX of mixed_depthwise_conv2d_cuda.cu,
# plus one entry with static shared memory and spills and one non-entry function (not a kernel) to skip.
PTXAS_LOG = """\
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function '_ZN9hybridops3mdc12_GLOBAL__N_114forward_kernelILi0EdEEvNS0_8GeometryENS0_13GroupPointersIKT0_EEPS6_S8_PS5_lllliiiib' for 'sm_61'
ptxas info    : Function properties for _ZN9hybridops3mdc12_GLOBAL__N_114forward_kernelILi0EdEEvNS0_8GeometryENS0_13GroupPointersIKT0_EEPS6_S8_PS5_lllliiiib
    32 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 252 registers, used 1 barriers, 32 bytes cumulative stack size, 1001 bytes cmem[0], 32 bytes cmem[2]
ptxas info    : Compile time = 94.225 ms
ptxas info    : Function properties for _Z6helperv
    8 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Compiling entry function '_Z5tiledPf' for 'sm_61'
ptxas info    : Function properties for _Z5tiledPf
    24 bytes stack frame, 12 bytes spill stores, 20 bytes spill loads
ptxas info    : Used 64 registers, used 1 barriers, 4096 bytes smem, 360 bytes cmem[0]
"""


def test_help_answers_without_touching_the_cache(tmp_path):
    proc = _run_script(tmp_path, "--help")
    assert proc.returncode == 0, proc.stderr
    assert "Usage: .ci/compile_sm61.sh" in proc.stdout
    for word in ("sm_61", "sm_70", "sm_75", "clang", "ptxas", "HYBRIDOPS_SM61_CACHE"):
        assert word in proc.stdout
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("args, message", [
    (["--bogus"], "unknown option '--bogus'"),
    (["--archs", "61"], "--archs takes names such as sm_61, got '61'"),
    (["--archs", ""], "--archs needs at least one arch"),
    (["--jobs", "0"], "--jobs must be a positive integer, got '0'"),
])
def test_bad_arguments_are_refused_by_name(tmp_path, args, message):
    proc = _run_script(tmp_path, *args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert not (tmp_path / "cache").exists()


def test_a_python_without_torch_is_refused_before_any_download(tmp_path):
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    proc = _run_script(tmp_path, "--python", str(fake))
    assert proc.returncode == 1
    assert f"--python {fake} cannot import torch" in proc.stderr
    assert not (tmp_path / "cache").exists()


def test_parser_reads_every_entry_function_and_skips_device_functions():
    rows = _load_parser().parse_ptxas(PTXAS_LOG)
    assert [(r.mangled, r.arch, r.registers, r.spill_stores, r.spill_loads, r.smem, r.stack) for r in rows] == [
        ("_ZN9hybridops3mdc12_GLOBAL__N_114forward_kernelILi0EdEEvNS0_8GeometryENS0_13GroupPointersIKT0_EEPS6_S8_"
         "PS5_lllliiiib", "sm_61", 252, 0, 0, 0, 32),
        ("_Z5tiledPf", "sm_61", 64, 12, 20, 4096, 24),
    ]


def test_parser_refuses_a_log_without_register_counts():
    with pytest.raises(ValueError, match="no 'Used N registers' line for '_Z1fv'"):
        _load_parser().parse_ptxas("ptxas info    : Compiling entry function '_Z1fv' for 'sm_61'\n")


@pytest.mark.parametrize("demangled, short", [
    ("void hybridops::mdc::(anonymous namespace)::forward_kernel<0, double>(hybridops::mdc::(anonymous "
     "namespace)::Geometry, long)", "mdc::forward_kernel<0, double>"),
    ("void hybridops::dcn::(anonymous namespace)::col2im_scatter_kernel<c10::BFloat16, long, unsigned long long, "
     "hybridops::dcn::(anonymous namespace)::FixedPointAdd>(hybridops::dcn::(anonymous namespace)::Geometry)",
     "dcn::col2im_scatter_kernel<BFloat16, long, unsigned long long, FixedPointAdd>"),
    ("tiled(float*)", "tiled"),
])
def test_short_name_keeps_op_kernel_and_template_arguments(demangled, short):
    assert _load_parser().short_name(demangled) == short


def test_markdown_table_has_one_row_per_kernel():
    parser = _load_parser()
    rows = parser.parse_ptxas(PTXAS_LOG)
    table = parser.markdown_table(rows, names=["mdc::forward_kernel<0, double>", "tiled"])
    lines = table.splitlines()
    assert lines[0] == "| kernel | registers | spill stores (B) | spill loads (B) | static smem (B) | stack (B) |"
    assert lines[2] == "| `mdc::forward_kernel<0, double>` | 252 | 0 | 0 | 0 | 32 |"
    assert lines[3] == "| `tiled` | 64 | 12 | 20 | 4096 | 24 |"
    assert len(lines) == 4
