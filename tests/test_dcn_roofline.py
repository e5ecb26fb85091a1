"""benchmarks/dcn_roofline.py: the DCNv2 roofline model's byte counts, its L2 and cost rules, the mirror
of the fused kernels' plan, and the CLI (predictions and --measured)."""
from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path

import pytest

from benchmarks import dcn_layouts as dl
from benchmarks import dcn_roofline as dr
from benchmarks._roofline import (GPUS, Access, Assumptions, Kernel, L2Model, gpu_for_device_name, kernel_cost,
                                  run_kernels)

ROOT = Path(__file__).resolve().parents[1]
CPU_RESULTS = ROOT / "benchmarks" / "results" / "deform_conv2d-cpu-20261123T195052.json"
H200 = GPUS["h200"]

# 1 image, 1 channel, 4x4, 3x3, fp32: every tensor's bytes by hand.
TINY = dr.Layer("tiny 1ch@4^2 b1", 1, 1, 4)
P = 16                    # output pixels
INPUT = 1 * 16 * 4        # 64
OFFSET = 18 * P * 4       # 1152: 2 x 9 (dy, dx) planes
MASK = 9 * P * 4          # 576
WEIGHT = 1 * 1 * 9 * 4    # 36
BIAS = 4
OUT = 1 * P * 4           # 64
COLUMNS = 1 * 9 * P * 4   # 576: [C * 9, P]
NECESSARY = INPUT + OFFSET + MASK + WEIGHT + BIAS + OUT  # 1896


def _requested(pred: dr.Prediction) -> dict[str, float]:
    return {k.name: k.l2_bytes for k in pred.kernels}


def test_tiny_case_forward_bytes_match_hand_count():
    tv = dr.predict("torchvision", "forward", TINY, "float32", H200)
    ours = dr.predict("im2col", "forward", TINY, "float32", H200)
    fused = dr.predict("fused", "forward", TINY, "float32", H200)
    # SM<->L2 requests, kernel by kernel. torchvision's im2col: one 1024-thread block covers 256 rows of
    # a 4-wide image and reads (256 + 3 + 2 * 1 px reach) / 256 input rows per row; offsets and masks
    # once per channel (1 here); the GEMM reads W, the columns and out_buf (read and written: addmm_).
    assert _requested(tv) == pytest.approx({
        "zeros(out)": OUT, "zeros(out_buf)": OUT, "zeros(columns)": COLUMNS,
        "im2col": INPUT * (256 + 3 + 2) / 256 + OFFSET + MASK + COLUMNS,
        "gemm out_buf (addmm_)": WEIGHT + COLUMNS + 2 * OUT,
        "copy out_buf -> out (transpose)": 2 * OUT, "out + bias": 2 * OUT + BIAS})
    # ours: 256-thread blocks (64 rows of 4) walk the input once per tap: 9 x (64 + 1 + 2) / 64.
    assert _requested(ours) == pytest.approx({
        "im2col": 9 * INPUT * (64 + 1 + 2) / 64 + OFFSET + MASK + COLUMNS,
        "copy bias -> out (baddbmm)": BIAS + OUT, "gemm (baddbmm)": WEIGHT + COLUMNS + 2 * OUT})
    # DRAM, everything fitting in L2: each input once, each output once, plus torchvision's three
    # zero-filled buffers (out, out_buf, columns) and ours' columns; the fused kernel moves exactly
    # the necessary bytes.
    assert tv.dram_bytes == pytest.approx(NECESSARY + OUT + OUT + COLUMNS)
    assert ours.dram_bytes == pytest.approx(NECESSARY + COLUMNS)
    assert fused.dram_bytes == pytest.approx(NECESSARY)
    # C_out x C_in x 9 MACs per pixel, over the block's whole 32-pixel tile: the kernel runs its 16
    # padded pixels too (zero samples), so 2 x 1 x 1 x 9 x 32 FLOPs executed for 2 x 9 x 16 useful.
    assert fused.total("gemm_flops") == 2 * 1 * 1 * 9 * 32


def test_two_channels_reread_offsets_per_channel_in_torchvision_only():
    layer = dr.Layer("tiny 2ch@4^2 b1", 1, 2, 4)
    tv = _requested(dr.predict("torchvision", "forward", layer, "float32", H200))
    ours = _requested(dr.predict("im2col", "forward", layer, "float32", H200))
    assert tv["im2col"] == pytest.approx(2 * INPUT * 261 / 256 + 2 * OFFSET + 2 * MASK + 2 * COLUMNS)
    assert ours["im2col"] == pytest.approx(9 * 2 * INPUT * 67 / 64 + OFFSET + MASK + 2 * COLUMNS)


def test_offset_rereads_come_from_dram_when_l2_is_small():
    """torchvision's im2col at 16ch@256^2 b2 fp32 re-reads offsets and masks once per channel; between
    two re-reads it touches 19.4 MB (offsets, masks, a channel's columns rows and input plane): they
    hit the H200's L2 (30 MB usable) but miss the 1080 Ti's (1.4 MB)."""
    layer, px = dr.ISSUE_LAYER, 256 * 256
    inp, off, msk, cols = 2 * 16 * px * 4, 2 * 18 * px * 4, 2 * 9 * px * 4, 2 * 16 * 9 * px * 4
    for gpu, walks in ((H200, 1), (GPUS["gtx1080ti"], 16)):
        pred = dr.predict("torchvision", "forward", layer, "float32", gpu)
        im2col = next(k for k in pred.kernels if k.name == "im2col")
        assert im2col.dram_bytes == pytest.approx(inp + walks * (off + msk) + cols), gpu.key


def test_issue_example_columns_buffer_and_necessary_traffic():
    check = dr.issue_check(Assumptions())
    assert check["columns_bytes"] == 2 * 16 * 9 * 256 * 256 * 4 == 75_497_472  # the issue's 75 MB
    px = 256 * 256
    necessary = 2 * 16 * px * 4 * 2 + 2 * 27 * px * 4 + 16 * 16 * 9 * 4 + 16 * 4  # in, out, offset+mask, W, b
    assert check["necessary_forward_bytes"] == necessary
    assert round(necessary / 1e6) == 31  # the issue's ~31 MB
    assert check["forward_dram_bytes"]["fused"] == pytest.approx(necessary)
    assert check["forward_dram_bytes"]["torchvision"] > check["forward_dram_bytes"]["im2col"] > 2 * 75e6
    text = dr.issue_check_text(check)
    assert "75.5 MB" in text and "30.9 MB" in text


def test_predicted_time_is_monotone_in_bytes_and_flops():
    asm = Assumptions()
    times = [kernel_cost(Kernel("k", (Access("x", b),)), b, H200, False, asm).time_s for b in range(0, 10**9, 10**8)]
    assert times == sorted(times) and times[-1] > times[0]
    flops = [kernel_cost(Kernel("k", (), gemm_flops=f), 0.0, H200, False, asm).time_s for f in (0, 1e9, 1e10, 1e11)]
    assert flops == sorted(flops) and flops[-1] > flops[0]
    for algo in dr.ALGOS:  # more images: more bytes and more time
        t = [dr.predict(algo, "full", dr.Layer("x", b, 16, 64), "float32", H200).time_s for b in (1, 2, 4, 8)]
        assert t == sorted(t), algo


def test_l2_model_streams_big_buffers_and_absorbs_rewrites():
    l2 = L2Model(100.0)
    assert l2.access(Access("a", 60)) == (60, 0)        # cold read
    assert l2.access(Access("a", 60)) == (0, 0)         # fits: hit
    assert l2.access(Access("big", 500, "w")) == (0, 500)
    assert l2.access(Access("big", 500)) == (500, 0)    # larger than L2: its re-read misses
    assert l2.access(Access("a", 60)) == (60, 0)        # ... and it evicted a
    assert l2.access(Access("c", 40, "w")) == (0, 40)
    assert l2.access(Access("c", 40, "w")) == (0, 0)    # overwritten while dirty in L2: one write-back
    # a buffer walked 3 times: re-walks hit when what is touched between them fits, else miss
    assert L2Model(100.0).access(Access("x", 10, sweeps=3, span=50)) == (10, 0)
    assert L2Model(100.0).access(Access("x", 10, sweeps=3, span=150)) == (30, 0)


def test_fused_plan_mirrors_the_header():
    header = (ROOT / "csrc" / "deform_conv2d" / "deform_conv2d_fused_plan.h").read_text()
    consts = {m.group(1): int(m.group(2)) for m in re.finditer(r"constexpr int(?:64_t)? (k\w+) = (\d+)", header)}
    assert consts["kFusedThreads"] == dr.FUSED_THREADS and consts["kFusedPairs"] == dr.FUSED_PAIRS
    assert consts["kFusedOutputs"] == dr.FUSED_OUTPUTS and consts["kFusedWeightOutputs"] == dr.FUSED_WEIGHT_OUTPUTS
    assert consts["kFusedPixelsPerThread"] == dr.FUSED_PIXELS_PER_THREAD
    assert consts["kFusedChannelsPerThread"] == dr.FUSED_CHANNELS_PER_THREAD
    assert "(int64_t(cc) * K * plan.tile_p + ld_w * cc * K) * acc_size" in header  # the transposed weight rows
    assert consts["kFusedItemChunks"] == dr.FUSED_ITEM_CHUNKS
    assert consts["kFusedTargetBlocks"] == dr.FUSED_TARGET_BLOCKS
    assert consts["kFusedAutoForwardMaxChannels"] == dr.FUSED_AUTO_FORWARD_MAX_CHANNELS
    assert consts["kFusedAutoBackwardMaxChannels"] == dr.FUSED_AUTO_BACKWARD_MAX_CHANNELS
    assert consts["kFusedAutoTensorCoreForwardMaxChannels"] == dr.FUSED_AUTO_TENSOR_CORE_FORWARD_MAX_CHANNELS
    assert "kFusedAutoMaxChannels" not in consts
    assert "kFusedSmemBytes = 48 * 1024" in header and dr.FUSED_SMEM_BYTES == 48 * 1024
    assert "(cc * K * (tp + 1) + co * tp) * acc_size" in header  # B's padded sample rows
    # by hand from plan_fused_forward / plan_fused_backward: 9 taps x 64 pixels > 256 threads x 2 pairs,
    # so 32-pixel tiles; tile_co = min(C, 256 x 8 / 32); the chunks are the largest of 16, 8, ... that
    # fit (B: C x chunk_b x 9 <= 256 x 16 entries, rows padded to 33); B's item chunks:
    # min(items = 2 x 4096 / 32 = 256, max(32, ceil(264 / (C / chunk_b)))).
    expect = {16: (32, 16, 16, 32, 16, 16, 256),  # 1 channel chunk: 264 wanted, 256 items
              40: (32, 40, 16, 32, 16, 8, 53),    # 5 channel chunks: ceil(264 / 5)
              80: (32, 64, 8, 32, 8, 4, 32),      # 20: ceil(264 / 20) = 14 < 32
              256: (32, 64, 8, 32, 1, 1, 32)}
    for c, plan in expect.items():
        got = dr.fused_plan(dr.Layer("x", 2, c, 64))
        assert (got.tile_p, got.tile_co, got.chunk_c, got.tile_p_bwd, got.chunk_a, got.chunk_b, got.item_chunks) == plan
    # a small layer: fewer items than wanted, one chunk per item
    assert dr.fused_plan(dr.Layer("x", 1, 16, 16)).item_chunks == 8  # 256 pixels / 32
    # chunk_b's padded rows: at 256 channels (9 x 33 + 256 x 32) x 4 = 33,956 B fits 48 KiB
    assert dr.fused_plan(dr.Layer("x", 2, 256, 64)).smem_b == (9 * 33 + 256 * 32) * 4


def test_auto_rule_forward_and_backward_separately():
    """use_fused with kFusedAutoForwardMaxChannels = 64 and kFusedAutoBackwardMaxChannels = 16: auto
    runs the fused forward up to 64 channels per group and the fused backward up to 16."""
    layers = [dr.Layer("x", 2, c, 64) for c in (16, 64, 65, 256)]
    assert [dr.auto_algos(x) for x in layers] == [("fused", "fused"), ("fused", "im2col"),
                                                   ("im2col", "im2col"), ("im2col", "im2col")]
    assert [dr.auto_label(layers[0], m) for m in dr.MODES] == ["fused", "fused", "fused"]
    small, wide = layers[1], layers[2]
    assert [dr.auto_label(small, m) for m in dr.MODES] == ["fused", "im2col", "fused fwd + im2col bwd"]
    assert [dr.auto_label(wide, m) for m in dr.MODES] == ["im2col", "im2col", "im2col"]
    # on tensor cores (fp16/bf16, Hopper profiles) the forward's limit is 192 channels; not on the 1080 Ti
    tc_layers = [dr.Layer("x", 2, c, 64) for c in (80, 192, 193)]
    assert [dr.auto_algos(x, "float16", H200)[0] for x in tc_layers] == ["fused", "fused", "im2col"]
    assert [dr.auto_algos(x, "bfloat16", GPUS["h100"])[0] for x in tc_layers] == ["fused", "fused", "im2col"]
    assert [dr.auto_algos(x, "float16", GPUS["gtx1080ti"])[0] for x in tc_layers] == ["im2col"] * 3
    assert [dr.auto_algos(x, "float32", H200)[0] for x in tc_layers] == ["im2col"] * 3
    # predict("auto"): the fused forward's kernels, then the im2col backward's
    full = dr.predict("auto", "full", small, "float32", H200)
    fwd = dr.predict("fused", "forward", small, "float32", H200)
    bwd = dr.predict("im2col", "full", small, "float32", H200)
    names = [k.name for k in full.kernels]
    assert names == [k.name for k in fwd.kernels] + [k.name for k in bwd.kernels][len(
        dr.im2col_forward(small, "float32", Assumptions())):]
    assert dr.predict("auto", "forward", wide, "float32", H200).time_s == pytest.approx(
        dr.predict("im2col", "forward", wide, "float32", H200).time_s)


def test_block_rules():
    assert [dr.tv_block_images(n) for n in (1, 2, 8, 32, 33, 37, 64)] == [1, 2, 8, 32, 11, 1, 32]
    assert all(dr.ours_block_images(layer, "float32") == 1 for layer in dr.benchmark_layers())
    assert dr.ours_block_images(dr.Layer("x", 8, 16, 16), "float32") == 8  # 256 pixels: 16 images fill 4096 columns


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="algo"):
        dr.predict("cudnn", "forward", TINY, "float32", H200)
    with pytest.raises(ValueError, match="mode"):
        dr.predict("im2col", "sideways", TINY, "float32", H200)
    with pytest.raises(ValueError, match="dtype"):
        dr.predict("im2col", "forward", TINY, "float64", H200)
    with pytest.raises(ValueError, match="torchvision has no bfloat16"):
        dr.predict("torchvision", "forward", TINY, "bfloat16", H200)


def test_gpu_profiles_from_device_names():
    assert gpu_for_device_name("NVIDIA H200").key == "h200"
    assert gpu_for_device_name("NVIDIA H100 80GB HBM3").key == "h100"
    assert gpu_for_device_name("NVIDIA GeForce GTX 1080 Ti").key == "gtx1080ti"
    assert gpu_for_device_name("NVIDIA H100 PCIe") is None and gpu_for_device_name("AMD EPYC") is None
    assert H200.clock_hz == pytest.approx(1.98e9, rel=0.01)


def test_cli_writes_json_with_the_expected_keys(tmp_path, capsys):
    path = tmp_path / "roofline.json"
    assert dr.main(["--gpus", "h200", "gtx1080ti", "--dtypes", "float32", "bfloat16", "--modes", "full",
                    "--traffic", "--breakdown", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "Predicted on H200 (model, not measured)" in out and "Predicted on GTX 1080 Ti" in out
    assert "Issue #16 check" in out and "| DRAM (MB) |" in out
    assert "| fused backward B (grad_weight partials) |" in out and "torchvision time shares" in out
    payload = json.loads(path.read_text())
    assert set(payload) == {"model", "kind", "assumptions", "ops_per_item", "gpus", "issue_check",
                            "torchvision_shares", "predictions", "measured"}
    assert payload["kind"] == "prediction (model, not measured)" and set(payload["gpus"]) == {"h200", "gtx1080ti"}
    rows = payload["predictions"]
    assert len(rows) == 2 * 4 * 2  # gpus x cases x dtypes (one mode)
    for r in rows:
        assert set(r) == {"gpu", "case", "batch", "channels", "size", "dtype", "mode", "algos", "speedup"}
        assert set(r["algos"]) == set(dr.ALGOS) and set(r["speedup"]) == set(dr.ALGOS[1:])
        for algo, a in r["algos"].items():
            if r["dtype"] == "bfloat16" and algo == "torchvision":
                assert a is None and r["speedup"]["im2col"] is None
                continue
            assert set(a) == {"time_us", "dram_bytes", "l2_bytes", "gemm_flops", "alu_ops", "launches", "bound"}
            assert a["time_us"] > 0 and a["dram_bytes"] > 0 and a["launches"] >= 1
    assert sum(payload["torchvision_shares"]["h200"].values()) == pytest.approx(1.0)


def test_cli_measured_cpu_file_prints_the_measurement_only(capsys):
    assert dr.main(["--gpus", "h200", "--dtypes", "float32", "--modes", "forward",
                    "--measured", str(CPU_RESULTS)]) == 0
    out = capsys.readouterr().out
    assert "the model is for GPUs: measured numbers only" in out
    rows = json.loads(CPU_RESULTS.read_text())["rows"]
    assert f"| {rows[0]['case']} | forward | float32 | {rows[0]['ours']['p50_ms']:.3f} |" in out
    assert f"{rows[0]['speedup']:.2f}x" in out


def test_measured_gpu_file_is_set_beside_the_prediction(tmp_path):
    payload = json.loads(CPU_RESULTS.read_text())
    payload["environment"].update(device="cuda", device_name="NVIDIA H200")  # as gpu_verify.sh writes it
    gpu, rows = dr.compare_measured(payload, Assumptions())
    assert gpu.key == "h200" and len(rows) == len(payload["rows"])
    for r in rows:
        assert r["auto"] == dr.auto_label(dr.layer_of_case(r["case"]), r["mode"], r["dtype"], gpu)
        assert set(r["predicted"]) == {*dr.ALGOS, "auto"} and all(v > 0 for v in r["predicted"].values())
    table = dr.measured_table("x.json", payload, gpu, rows)
    assert "predicted ours (ms)" in table and "(fused)" in table and "(im2col)" in table
    assert "(fused fwd + im2col bwd)" in table  # 16 channels: fused both ways; 40: fused forward; 80 and up: im2col
    # up to 64 channels the forward is fused, up to 16 the backward; wider: im2col (fp32 rows here)
    by = {(r["case"].split()[1], r["mode"]): r["auto"] for r in rows}
    assert by[("16ch@256^2", "forward")] == "fused" and by[("16ch@256^2", "backward")] == "fused"
    assert by[("40ch@128^2", "forward")] == "fused" and by[("40ch@128^2", "backward")] == "im2col"
    assert by[("80ch@64^2", "forward")] == "im2col"
    path = tmp_path / "h200.json"
    path.write_text(json.dumps(payload))
    assert dr.main(["--gpus", "h200", "--dtypes", "float32", "--modes", "full", "--measured", str(path)]) == 0


@pytest.mark.parametrize("content, match", [("{not json", "not JSON"),
                                            (json.dumps({"benchmark": "mixconv", "rows": []}), "not a deform_conv2d")])
def test_cli_measured_bad_file_is_a_clear_error(tmp_path, capsys, content, match):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(SystemExit) as exc:
        dr.main(["--measured", str(path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert str(path) in err and match in err
    with pytest.raises(SystemExit):
        dr.main(["--measured", str(tmp_path / "missing.json")])
    assert "cannot read" in capsys.readouterr().err


def test_case_names_parse():
    layer = dr.layer_of_case("detection 256ch@64^2 b8")
    assert (layer.batch, layer.channels, layer.size) == (8, 256, 64)
    assert dr.layer_of_case("something else") is None
    assert math.isclose(dr.Sizes.of(layer, "float16").input, 256 * 64 * 64 * 2)


def test_bank_wavefronts():
    assert dr.bank_wavefronts([]) == 0
    assert dr.bank_wavefronts(range(32)) == 1             # 32 consecutive words
    assert dr.bank_wavefronts([7] * 32) == 1              # one word: a broadcast
    assert dr.bank_wavefronts(range(0, 32 * 32, 32)) == 32  # a column of a [.][32] tile
    assert dr.bank_wavefronts(range(0, 32 * 33, 33)) == 1   # ... of a [.][33] tile
    assert dr.bank_wavefronts([0, 32, 32, 1]) == 2        # two words in bank 0


def test_fused_grad_weight_kernel_has_no_bank_conflict_and_fills_the_grid():
    """Kernel B as built (16ch@256^2 b2): rows padded to ld = 33, so a warp's samples[r * 33 + pp]
    (lanes along r) hit 32 distinct banks; gout[co * 32 + pp] is a broadcast. Per pp step, 144 x 16 =
    2304 entries = 72 warp-slots: 64 take 2 wavefronts; the 8 that straddle an odd multiple of
    144 (co changes at lane 16) take 2 for gout (co and co + 1 in one bank) and 2 for samples
    (r = 128..143 and 0..15 share banks) = 4: 160 / 72 = 20/9 per warp-wide FMA (33 before the
    padding). Grid: ceil(264 / 1 channel chunk) = 264 item chunks (of 4096 items) = 264 blocks."""
    layer = dr.ISSUE_LAYER
    fp = dr.fused_plan(layer)
    assert (fp.chunk_b, fp.item_chunks) == (16, 264)
    gemm, stores = dr.weight_grad_block_wavefronts(32, 33, 16, 16, 9)
    assert gemm == 32 * 160  # per item: 32 pp steps
    assert max(dr.bank_wavefronts([r * 33 for r in range(w, w + 32)]) for w in range(0, 144 - 32)) == 1
    # the layout before the padding (ld = tile_p): every lane's sample in one bank, a 32-way conflict
    unpadded, _ = dr.weight_grad_block_wavefronts(32, 32, 16, 16, 9)
    assert unpadded == 32 * (64 * (1 + 32) + 8 * (2 + 32))
    samples = 16 * 9 * 256 * 256 * 2
    macs = 16 * samples
    built = {k.name: k for k in dr.fused_backward(layer, "float32", H200, Assumptions())}
    b = built["fused backward B (grad_weight partials)"]
    assert b.blocks == 264 and b.gemm_flops == 2 * macs
    per_item_stores = 16 * 9 + 16  # sample rows (9 warp-slots x 16 channels) and gout (16 x 32 / 32)
    assert stores == per_item_stores
    assert b.smem_wavefronts == pytest.approx(4096 * (32 * 160 + per_item_stores))
    assert 4096 * gemm / (macs / 32) == pytest.approx(20 / 9)  # the micro-GEMM alone
    cost = kernel_cost(b, 0.0, H200, False, Assumptions())
    assert cost.t_smem == pytest.approx(b.smem_wavefronts / (132 * H200.clock_hz))  # 264 blocks: full fill
    target = {k.name: k for k in dr.fused_backward(layer, "float32", H200, Assumptions(), dr.FUSED_TARGET)}
    tb = target["fused backward B (grad_weight partials)"]
    assert tb.smem_wavefronts == pytest.approx((macs * 0.25 + samples) / 32) and tb.blocks == 264


def test_fused_forward_micro_gemm_is_register_tiled():
    """fused_forward_kernel as built: a thread's register tile is 2 pixels x 4 channels; per r it loads
    2 samples (64 bits) and 4 weights (128 bits). A warp at tile_p = 32 spans 16 pixel pairs (32
    distinct sample words: 1 wavefront) and 2 channel quads (8 weight words, broadcast: 1). 16
    channels: 64 threads compute (2 warps): 4 wavefronts per r for 16 warp-FMAs = 0.25 per warp-wide
    FMA (1.5 with one FMA a load, 2 before that). 80 channels: tile_co = 64 twice (the second tile
    runs 48 zero-weight channels): per r and block 8 warps x 2 = 16 wavefronts for 64 warp-FMAs.
    Stores: the sample rows (9 warp-slots per channel) and the transposed weight tile, conflict-free
    with its row stride of 16 + 4 words (one wavefront per warp trip)."""
    layer = dr.ISSUE_LAYER
    fwd = dr.fused_forward(layer, "float32", Assumptions())[0]
    blocks, rk = 2 * 2048, 16 * 9
    assert fwd.blocks == blocks
    assert dr.fused_weight_row_stride(16) == 20 and dr.fused_weight_row_stride(35) == 40
    gemm, stores = dr.forward_block_wavefronts(32, 16, 16, 9)
    assert gemm == rk * 2 * (1 + 1)
    assert stores == 16 * 9 + (16 * rk) // 32
    assert fwd.smem_wavefronts == pytest.approx(blocks * (gemm + stores))
    macs = 16 * 16 * 9 * 256 * 256 * 2
    assert fwd.gemm_flops == 2 * macs
    assert blocks * gemm / (macs / 32) == pytest.approx(0.25)
    wide = dr.fused_forward(dr.Layer("x", 2, 80, 64), "float32", Assumptions())[0]
    assert wide.gemm_flops == 2 * 2 * 4096 * 9 * 80 * 128  # executed: 2 tiles x 64 channels
    g8, _ = dr.forward_block_wavefronts(32, 64, 8, 9)
    assert g8 == 8 * 9 * (8 * 2)
    # backward kernel A's grad_columns GEMM, register-tiled the same way: 144 rows x 32 pixels = 576
    # register tiles, 18 warp trips of 1 + 1 wavefronts per output channel (0.25 per warp-wide FMA)
    gemm_a, _ = dr.sampling_block_wavefronts(32, 16, 16, 9)
    assert gemm_a == 16 * 18 * 2 and gemm_a / (144 * 32 * 16 / 32) == pytest.approx(0.25)
    # vector accesses: 32 lanes x 128 bits of distinct words need 4 wavefronts; a broadcast one
    assert dr.vector_wavefronts((4 * lane, 4) for lane in range(32)) == 4
    assert dr.vector_wavefronts((0, 4) for _ in range(32)) == 1
    assert dr.vector_wavefronts((lane, 1) for lane in range(32)) == dr.bank_wavefronts(range(32)) == 1


def test_warm_l2_reads_small_layers_from_l2():
    layer = dr.Layer("x", 2, 80, 64)  # all of its tensors fit the H200's usable L2
    cold = dr.predict("fused", "forward", layer, "float32", H200)
    warm = dr.predict("fused", "forward", layer, "float32", H200, Assumptions(steady_state=True))
    # input, offset + mask, output of 2 images, weight, bias: each once
    assert cold.dram_bytes == pytest.approx(2 * (80 + 27 + 80) * 4096 * 4 + 80 * 80 * 9 * 4 + 80 * 4)
    assert warm.dram_bytes == 0.0 and warm.time_s <= cold.time_s


# ----------------------------------------------------------------------- tensor-core fused forward

def test_ldmatrix_and_accumulator_store_wavefronts_by_hand():
    """A 16x16 fp16 tile is 4 phases of 8 rows x 16 bytes: conflict-free when the 8 row starts fall in
    8 different 16-byte bank groups, i.e. (stride / 16) odd; 64-byte rows (tile_p = 32 halves) put 4
    rows in each of 2 groups (4-way), 128-byte rows all 8 in one (8-way), 288 bytes (rk_pad = 144)
    2-way. The accumulator: 4 stores of 256 bytes, 2 wavefronts each at best; 128-byte rows 8-way."""
    wf = dr.matrix_load_wavefronts
    assert [wf(b) for b in (80, 304, 144)] == [4, 4, 4]       # 16-byte multiples with an odd quotient
    assert [wf(b) for b in (32, 64, 128, 256, 160, 288)] == [8, 16, 32, 32, 8, 8]
    store = dr.accumulator_store_wavefronts
    assert store(128) == 4 * 8 and store(144) == 4 * 2


def test_tensor_core_forward_tiles_by_hand():
    """rk = chunk x 9 rounded up to 16; tile_co rounded up to 16; (tile_co_pad / 16) x (32 / 16) fragments;
    shared memory = samples and weight in 2 bytes, the fp32 staging tile."""
    t16 = dr.mma_tiles(32, 16, 16, 9, 0)
    assert (t16.rk, t16.rk_pad, t16.tile_co_pad, t16.fragments) == (144, 144, 16, 2)
    assert t16.smem_bytes == 144 * 32 * 2 + 16 * 144 * 2 + 16 * 32 * 4
    # as built (fused_tc_smem_bytes): every row 8 16-bit elements (16 bytes) longer, staging 4 floats
    assert dr.mma_tiles(32, 16, 16, 9).smem_bytes == 2 * (144 * (32 + 8) + 16 * (144 + 8)) + 4 * 16 * (32 + 4)
    # the tensor-core plan's own chunk (plan_fused_forward_tc): 16 channels at every benchmark width
    assert [dr.mma_chunk(32, co, 9) for co in (16, 40, 64)] == [16, 16, 16]
    t40 = [dr.mma_tiles(32, 40, cc, 9) for cc in dr.channel_chunks(40, 16)]  # chunks 16, 16, 8
    assert [(t.rk, t.rk_pad, t.tile_co_pad, t.fragments) for t in t40] == [(144, 144, 48, 6)] * 2 + [(72, 80, 48, 6)]
    t80 = dr.mma_tiles(32, 64, 8, 9)
    assert (t80.rk_pad, t80.tile_co_pad, t80.fragments) == (80, 64, 8)
    for c in range(1, 257):  # every plan keeps one fragment per warp at most and fits 48 KiB
        fp = dr.fused_plan(dr.Layer("x", 1, c, 64))
        for cc in set(dr.channel_chunks(c, dr.mma_chunk(fp.tile_p, fp.tile_co, 9))):
            t = dr.mma_tiles(fp.tile_p, fp.tile_co, cc, 9)
            assert t.fragments <= dr.MMA_WARPS == 8 and t.smem_bytes <= dr.FUSED_SMEM_BYTES
    with pytest.raises(ValueError, match="tile_p"):
        dr.mma_tiles(8, 16, 1, 9)


def test_tensor_core_forward_runs_for_half_on_hopper_only():
    layer = dr.ISSUE_LAYER
    name = {(dt, g): dr.plan("fused", layer, dt, GPUS[g], Assumptions())[0][0].name
            for dt in dr.DTYPE_BYTES for g in GPUS}
    for g in ("h100", "h200"):
        assert name[("float16", g)] == name[("bfloat16", g)] == "fused forward (tensor cores)"
        assert name[("float32", g)] == "fused forward"
    assert {name[(dt, "gtx1080ti")] for dt in dr.DTYPE_BYTES} == {"fused forward"}  # sm_61: FMA
    target = dr.plan("fused_target", layer, "float16", H200, Assumptions())[0][0]
    assert target.name == "fused forward"  # the target's own rates, unchanged


def test_tensor_core_forward_counts_by_hand():
    """16ch@256^2 b2: 2 x 2048 blocks of 2 fragments, one chunk of rk = 144 = 9 steps. Unpadded rows
    (``mma_pad`` 0): a step is A (288-byte rows, 2-way) 8 + B (64-byte rows, 4-way) 16 wavefronts; the
    end 2 fragments x 4 stores x 8 (128-byte staging rows) + 512 outputs read (16). As built (rows
    16 bytes longer): 4 + 4 a step, 2 a store. Stores: 16 channels x 9 warp-slots of samples, 16 x 144
    weights (72 slots). Same bytes as the FMA kernel; MMA FLOPs = 2 x 16 x 32 x 144 a block."""
    layer, asm = dr.ISSUE_LAYER, Assumptions()
    tc = dr.fused_forward(layer, "float16", asm, tensor_cores=True)[0]
    fma = dr.fused_forward(layer, "float16", asm)[0]
    blocks = 2 * 2048
    assert dr.mma_forward_block_wavefronts(32, 16, 16, 9, 0) == (2 * 9 * (8 + 16), 16 * 9 + 72)
    assert dr.mma_forward_epilogue_wavefronts(32, 16, 0) == 2 * 4 * 8 + 16
    padded = dr.mma_forward_block_wavefronts(32, 16, 16, 9)
    assert padded[0] == 2 * 9 * (4 + 4)
    assert tc.smem_wavefronts == blocks * (sum(padded) + 2 * 4 * 2 + 16)
    assert tc.gemm_flops == 2 * blocks * 16 * 32 * 144 == fma.gemm_flops  # no padding at 16 channels
    assert tc.accesses == fma.accesses and tc.alu_ops == fma.alu_ops and tc.tensor_cores
    # rows padded by 16 bytes: every load and store conflict-free (8 a step, 2 a store)
    assert dr.mma_forward_block_wavefronts(32, 16, 16, 9, 16)[0] == 2 * 9 * (4 + 4)
    assert dr.mma_forward_epilogue_wavefronts(32, 16, 16) == 2 * 4 * 2 + 16
    # 80 channels: 64-wide channel tiles of 8 fragments; 5 chunks of 16 channels = 144 rows
    wide = dr.fused_forward(dr.Layer("x", 2, 80, 64), "float16", asm, tensor_cores=True)[0]
    assert wide.gemm_flops == 2 * (2 * 128 * 2) * 5 * (64 * 32 * 144)  # blocks x chunks x (co_pad x tile_p x rk_pad)


def test_tensor_core_forward_predicted_faster_than_fma_forward():
    asm = Assumptions()
    for layer in dr.benchmark_layers():
        for dtype in ("float16", "bfloat16"):
            tc = run_kernels([], dr.fused_forward(layer, dtype, asm, tensor_cores=True), H200, True, asm)
            fma = run_kernels([], dr.fused_forward(layer, dtype, asm), H200, True, asm)
            assert sum(k.time_s for k in tc) < sum(k.time_s for k in fma), (layer.name, dtype)
            assert dr.predict("fused", "forward", layer, dtype, H200).time_s == pytest.approx(sum(k.time_s for k in tc))


def test_tensor_core_constants_mirror_the_header_once_built():
    """The spec's constants (WMMA 16x16x16, one fragment per warp of 256 threads). The kernel is being
    built; once a header names them, they must agree."""
    assert (dr.MMA_TILE, dr.MMA_WARPS, dr.MMA_ELEM, dr.MMA_ROW_PAD_BYTES) == (16, 8, 2, 16)
    sources = "".join(p.read_text() for p in (ROOT / "csrc" / "deform_conv2d").glob("deform_conv2d_fused*"))
    if "wmma" not in sources:
        pytest.skip("no tensor-core fused forward in csrc/deform_conv2d yet (the model follows the issue's spec)")
    found = re.finditer(r"constexpr int(?:64_t)? (kFusedMma\w*) = (\d+)", sources)
    consts = {m.group(1): int(m.group(2)) for m in found}
    assert consts, "the tensor-core kernel's constants (kFusedMma*) are not in the headers: mirror them here"
    for name, value in consts.items():
        if "Tile" in name or name.endswith(("M", "N", "K")):
            assert value == dr.MMA_TILE, name
        if "Pad" in name:
            assert value == dr.MMA_ROW_PAD_BYTES // dr.MMA_ELEM, name


# ------------------------------------------------------------------------------ layout study

def test_gathers_smooth_and_random_offsets():
    """16ch@256^2 b2, forward tiles (32 pixels, chunks of 16). Random: an NCHW lane gets its own sectors,
    ~2 rows x (1 + 1/16) sectors of 32 B per fp16 value (~68 B, less the chance collisions in the
    plane); an NHWC corner is one aligned 32-byte sector for 16 fp16 channels: 4 x 32 / 16 = 8 B a
    value, 100% of each load useful. Smooth (zero offsets): coalesced rows in both; NCHW's bytes within
    25% of the main model's window factor."""
    layer = dr.ISSUE_LAYER
    nchw, nhwc = (dl.gather_count(layer, "float16", lay, "random", 32, 16) for lay in ("nchw", "nhwc"))
    assert 55 < nchw.l2_per_value <= 68 and nchw.load_sectors == pytest.approx(32, abs=0.5)
    assert nhwc.l2_per_value == pytest.approx(8, rel=0.02) and nhwc.load_efficiency == pytest.approx(1.0)
    smooth = {lay: dl.gather_count(layer, "float16", lay, "smooth", 32, 16) for lay in ("nchw", "nhwc")}
    assert 2.4 <= smooth["nchw"].load_sectors <= 3.0  # 64 useful bytes, misaligned by the tap's column
    assert smooth["nchw"].factor == pytest.approx(dr.window_factor(layer, 32, 1.0), rel=0.25)
    assert smooth["nhwc"].l2_per_value < smooth["nchw"].l2_per_value < 2 * smooth["nhwc"].l2_per_value
    again = dl.gather_count.__wrapped__(layer, "float16", "nchw", "random", 32, 16)
    assert again == nchw  # a fixed seed: reproducible
    with pytest.raises(ValueError, match="layout"):
        dl.gather_count(dr.Layer("x", 1, 4, 16), "float16", "nhwc", "smooth", 32, 4)  # 8 bytes a pixel


def test_smooth_corners_of_a_tile_by_hand():
    """Zero offsets, a 16x16 image, tap (0, 0): pixel 0 samples (-1, -1), whose only in-plane corner is
    its bottom-right (0, 0); pixel 1 samples (-1, 0): bottom corners (0, 0) and (0, 1)."""
    corners = dl._block_corners(dr.Layer("x", 1, 1, 16), "smooth", random.Random(0), 0, 32)
    assert corners[0][0] == [None, None, None, 0] and corners[0][1] == [None, None, 0, 1]
    assert corners[4][17] == [17, 18, 33, 34]  # centre tap of pixel (1, 1): rows 1-2, columns 1-2
    last = dl._block_corners(dr.Layer("x", 1, 1, 16), "smooth", random.Random(0), 224, 32)
    assert last[4][31] == [255, None, None, None]  # pixel (15, 15), centre tap: samples (15, 15)
    assert last[8][31] == [None] * 4  # tap (2, 2) samples (16, 16): y = H is outside [-1, H)


def test_nhwc_sampling_instructions():
    """4 scalar corner loads + a pointer step (5 of 12) become 4 / v loads, v = values a 128-bit load."""
    assert dl.sample_ops("fused_sample", "nchw", "float16", 16) == 12
    assert dl.sample_ops("fused_sample", "nhwc", "float16", 16) == 12 - 5 + 4 / 8
    assert dl.sample_ops("fused_sample", "nhwc", "float32", 8) == 12 - 5 + 4 / 4
    assert dl.sample_ops("fused_sample", "nhwc", "float16", 1) == 12 - 5 + 4  # a 2-byte chunk: scalar loads
    assert dl.sample_ops("fused_sample", "nhwc", "float16", 4) == 12 - 5 + 4  # 8 bytes: not a whole vector
    assert dl.sample_ops("fused_grad", "nhwc", "bfloat16", 16) == 35 - 5 + 1  # A: 4 values a load at most
    assert dl.sample_ops("fused_grad", "nhwc", "float32", 8) == 35 - 5 + 1
    # the vector widths are the built kernels' (deform_conv2d_fused_cuda.cuh)
    source = (ROOT / "csrc" / "deform_conv2d" / "deform_conv2d_fused_cuda.cuh").read_text()
    assert int(re.search(r"constexpr int kLoadBytes = (\d+);", source).group(1)) == dl.VECTOR_BYTES
    assert int(re.search(r"constexpr int kGradLoadVectorMax = (\d+);", source).group(1)) == dl.GRAD_VECTOR_VALUES


def test_layout_copies_per_caller():
    """A channels_last caller of the copying NCHW kernels (before 2026-12-02): .contiguous() of input,
    offset, mask and weight (forward), of grad_out, input, offset, mask and weight (backward), and one
    conversion of each NCHW result by its consumer; a stride-aware driver copies the input and the weight;
    the NHWC variant (built) the weight only (and grad_weight back). An NCHW caller of the NHWC
    variant: the input to NHWC, forward and backward."""
    layer, asm = dr.ISSUE_LAYER, Assumptions()

    def copies(caller, kernels):
        fwd, bwd = dl.layout_plan("fused", layer, "float16", H200, asm, caller, kernels, "smooth")
        kinds = (".contiguous()", "consumer to channels_last", "to NCHW", "to NHWC")
        return [[k.name for k in ks if k.name.split(":")[0] in kinds] for ks in (fwd, bwd)]

    fwd, bwd = copies("channels_last", "nchw")
    assert fwd == [".contiguous(): input_cl -> input", ".contiguous(): offset_cl -> offset",
                   ".contiguous(): mask_cl -> mask", ".contiguous(): weight_cl -> weight",
                   "consumer to channels_last: out -> out_cl"]
    assert bwd[0] == ".contiguous(): grad_out_cl -> grad_out" and len(bwd) == 5 + 4
    weight = [".contiguous(): weight_cl -> weight"]
    back = ["consumer to channels_last: grad_weight -> grad_weight_cl"]
    assert copies("channels_last", "nchw-strided") == [["to NCHW: input_cl -> input"] + weight,
                                                        ["to NCHW: input_cl -> input"] + weight + back]
    assert copies("channels_last", "nhwc") == [weight, weight + back]  # the weight: read NCHW by every driver
    assert copies("nchw", "nchw") == [[], []]
    assert copies("nchw", "nhwc") == [["to NHWC: input -> input_nhwc"]] * 2
    fwd, _ = dl.layout_plan("fused", layer, "float16", H200, asm, "nchw", "nhwc", "smooth")
    copy = fwd[0]
    assert copy.requested_bytes == 2 * 2 * (16 * 256 * 256 * 2)  # 2 images, read + write
    assert any(a.buffer == "input_nhwc#0" for a in fwd[1].accesses)  # the kernel gathers the copy
    with pytest.raises(ValueError, match="caller"):
        dl.layout_plan("fused", layer, "float16", H200, asm, "nhwc", "nchw", "smooth")


def test_layout_verdict_directions():
    """What the study concludes at HybridNetSeg's 16-channel layer, fp16, on the H200 (model): for an NCHW
    caller the NHWC variant ties or loses with smooth offsets (the input transpose costs about what its
    vector loads save) and wins big with random ones; for a channels_last caller it beats the NCHW
    kernels with copies (their 4-5 copies a direction; the NHWC variant is what it runs since) but
    only ties a stride-aware NCHW driver in full."""
    rep = dl.report([dr.ISSUE_LAYER], ["float16"], ["forward", "full"], [H200], scenarios=("smooth", "random"))
    assert rep["kind"] == "prediction (model, not measured)" and len(rep["rows"]) == 2 * 2
    by = {(r["mode"], r["offsets"]): r for r in rep["rows"]}
    for r in rep["rows"]:
        for key, ratio in r["speedup_nhwc"].items():
            assert r["call"][key] == ("wins" if ratio > 1.1 else "loses" if ratio < 0.9 else "tie")
    assert by[("full", "smooth")]["call"]["nchw_caller"] == "tie"
    assert by[("forward", "smooth")]["speedup_nhwc"]["nchw_caller"] < 1.0
    assert by[("full", "random")]["speedup_nhwc"]["nchw_caller"] > 2.0
    assert by[("full", "smooth")]["call"]["cl_caller"] == "wins"
    assert by[("full", "smooth")]["call"]["cl_caller_strided"] == "tie"
    assert rep["tally"]["smooth"]["nchw_caller"] == {"wins": 0, "tie": 1, "loses": 0}
    # NCHW kernels for an NCHW caller: the main model's prediction, the input's window from the sectors
    ours = by[("full", "smooth")]["us"]["nchw/nchw"]
    assert ours == pytest.approx(dr.predict("fused", "full", dr.ISSUE_LAYER, "float16", H200).time_s * 1e6, rel=0.05)


def test_cli_layouts(tmp_path, capsys):
    path = tmp_path / "layouts.json"
    assert dl.main(["--gpus", "h200", "--dtypes", "float16", "--modes", "forward",
                    "--offsets", "smooth", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "Gathers of the fused forward" in out and "Layouts on H200" in out and "Verdict on H200" in out
    assert "NHWC variant, forward mode" in out
    payload = json.loads(path.read_text())
    lay = payload["layouts"]
    assert lay["algo"] == "fused" and lay["scenarios"] == ["smooth"] and len(lay["rows"]) == 4  # 4 cases
    assert set(lay["rows"][0]["us"]) == {"nchw/nchw", "nchw/nhwc", "channels_last/nchw",
                                         "channels_last/nchw-strided", "channels_last/nhwc"}
