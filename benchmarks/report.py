"""The results of :func:`benchmarks.run.run` as text tables, each with a summary line."""

STEAL_WARNING = 0.05  # a larger share of CPU time stolen by the host makes a run suspect
SLOWDOWN_WARNING = 1.3  # a fixed loop this much slower than its fastest in the run: suspect


def _table(header, rows) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return [fmt.format(*header), *(fmt.format(*map(str, r)) for r in rows)]


def _f(value, spec=".2f", missing="-"):
    return missing if value is None else format(value, spec)


def format_results(results: dict) -> str:
    """All parts as text tables, each followed by its summary line."""
    out = [f"threads {results['threads']}, load at start {results['load_start']}"]
    steal = {k: v for k, v in results.get("steal", {}).items() if v is not None}
    if steal:
        shares = ", ".join(f"{k} {100 * v:.0f}%" for k, v in steal.items())
        out.append(f"CPU time stolen by the host: {shares}")
        if max(steal.values()) > STEAL_WARNING:
            out.append(
                "WARNING: the host ran other machines on these cores; the figures are slower "
                "than this CPU and their ratios less certain"
            )
    loops = results.get("loop_ms", {})
    if loops:
        times = ", ".join(f"{k} {v:.0f}" for k, v in loops.items())
        out.append(f"a fixed Python loop (ms) at start and after each part: {times}")
        slowdown = max(loops.values()) / min(loops.values())
        if slowdown > SLOWDOWN_WARNING:
            out.append(
                f"WARNING: the machine's speed changed during the run (the same loop up to "
                f"{slowdown:.1f}x slower): figures taken at different times compare less well"
            )
    if "machine" in results:
        m = results["machine"]
        out.insert(0, f"cpu {m['cpu']} ({', '.join(m['flags']) or 'none of the notable flags'})")
    if "peak" in results:
        p = results["peak"]
        out += [
            "",
            f"[peak] float32 matmul {p['size']}^2: {p['gflops']:.1f} GFLOP/s best, "
            f"{p['median_gflops']:.1f} median ({results['threads']} threads)",
        ]
        if "peak_bfloat16" in results:
            b = results["peak_bfloat16"]
            out.append(
                f"[peak] bfloat16 matmul {b['size']}^2: {b['gflops']:.1f} GFLOP/s best, "
                f"{b['median_gflops']:.1f} median ({b['gflops'] / p['gflops']:.2f}x float32)"
            )
    if "supernet" in results:
        out += ["", "[supernet] one search step (architecture + weight step)"]
        rows = []
        for res in results["supernet"]["results"].values():
            ok = res["status"] == "ok"
            g = res.get
            batch = f"{res['batch']}" + (" (reduced)" if res.get("reduced_batch") else "")
            rows.append(
                (
                    res["config"],
                    res["formulation"],
                    g("precision", "-"),
                    batch,
                    _f(g("images_per_s")) if ok else res["status"],
                    _f(g("step_s")),
                    _f(g("trace_s"), ".1f"),
                    _f(g("first_step_s"), ".1f"),
                    _f(g("to_first_step_s"), ".1f"),
                    _f(g("gflops"), ".1f"),
                    _f(100 * g("fraction_of_peak") if g("fraction_of_peak") else None, ".0f"),
                    _f(g("step_gflop"), ".1f"),
                    _f(g("peak_rss_mib"), ".0f"),
                    ",".join(map(str, g("load", [])[:1])),
                )
            )
        out += _table(
            (
                "config",
                "formulation",
                "binary convs",
                "batch",
                "images/s",
                "step s",
                "trace s",
                "1st call s",
                "start->1st step s",
                "GFLOP/s",
                "% peak",
                "GFLOP/step",
                "peak RSS MiB",
                "load",
            ),
            rows,
        )
        ratios = results["supernet"]["ratios"]
        out.append(
            "summary: "
            + (", ".join(f"{k} {v:.1f}x" for k, v in ratios.items()) or "no ratio measured")
        )
    if "evalnet" in results:
        out += ["", "[evalnet] training step of bats_paper (Adam, cross-entropy)"]
        rows, summary = [], []
        for name, res in results["evalnet"]["results"].items():
            for k in ("bats_tf", "bats_tf_bfloat16", "bnn_torch"):
                if k in res:
                    runs = "/".join(f"{v:.2f}" for v in res[k]["runs"])
                    rows.append(
                        (name, k, res["batch"], f"{res[k]['images_per_s']:.2f}", runs,
                         f"{res[k]['gflops']:.1f}")
                    )  # fmt: skip
            if res.get("peer_error"):
                rows.append((name, "bnn_torch", res["batch"], "n/a", res["peer_error"], "-"))
            if "ours_vs_torch" in res:
                summary.append(
                    f"{name} ours vs PyTorch {res['ours_vs_torch']:.2f}x float32, "
                    f"{res['ours_bfloat16_vs_torch']:.2f}x bfloat16"
                )
        out += _table(("config", "framework", "batch", "images/s", "runs", "GFLOP/s"), rows)
        out.append("summary: " + (", ".join(summary) or "no PyTorch peer"))
    if "precision" in results:
        res = results["precision"]
        out += ["", "[precision] binary convolutions (3x3), float32 vs bfloat16 (exact forward)"]
        rows, summary = [], []
        for name, r in res["convs"].items():
            for kind in ("forward", "train"):
                f32, b16 = r[f"float32_{kind}"], r[f"bfloat16_{kind}"]
                rows.append(
                    (name, kind, _f(f32["images_per_s"], ".1f"), _f(b16["images_per_s"], ".1f"),
                     f"{r[f'speedup_{kind}']:.2f}x",
                     _f(100 * f32["fraction_of_peak"] if f32["fraction_of_peak"] else None, ".0f"),
                     _f(100 * b16["fraction_of_peak"] if b16["fraction_of_peak"] else None, ".0f"))
                )  # fmt: skip
        for name, r in res["networks"].items():
            rows.append(
                (name, "network step", _f(r["float32"]["images_per_s"], ".1f"),
                 _f(r["bfloat16"]["images_per_s"], ".1f"), f"{r['speedup']:.2f}x", "-", "-")
            )  # fmt: skip
            summary.append(f"{name} training step {r['speedup']:.2f}x in bfloat16")
        header = ("shape", "pass", "f32 img/s", "bf16 img/s", "bf16/f32", "f32 %pk", "bf16 %pk")
        out += _table(header, rows)
        out.append("summary: " + ", ".join(summary))
    if "grouped" in results:
        out += ["", "[grouped] search convs (3x3) forward + backward: grouped vs block-diagonal"]
        rows, summary = [], []
        for name, r in results["grouped"]["shapes"].items():
            for fmt in ("float32", "bfloat16"):
                g, d = r[f"{fmt}/grouped"], r[f"{fmt}/block_diagonal"]
                pk = [
                    _f(100 * x["fraction_of_peak"] if x["fraction_of_peak"] else None, ".0f")
                    for x in (g, d)
                ]
                ratio = r[f"{fmt}/block_diagonal_vs_grouped"]
                rows.append((name, fmt, _f(g["images_per_s"], ".1f"),
                             _f(d["images_per_s"], ".1f"), f"{ratio:.2f}x", *pk))  # fmt: skip
                summary.append(f"{name} {fmt} {ratio:.2f}x")
        header = ("shape", "format", "grouped img/s", "block-diag img/s", "bd/grouped",
                  "grouped %pk", "block-diag %pk")  # fmt: skip
        out += _table(header, rows)
        out.append("summary: block-diagonal vs grouped " + ", ".join(summary))
    if "inference" in results:
        res = results["inference"]
        out += [
            "",
            f"[inference] bats_paper C={res['init_channels']} layers={res['layers']} "
            f"groups={res['groups']}, batch 1: {res['lce_bconv2d']} LceBconv2d for "
            f"{res['binary_convs']} binary convs",
        ]
        if res.get("deploy_error"):
            out.append(f"NOT fully binary: {res['deploy_error']}")
        lat, size = res["latency_ms"], res["size_bytes"]
        kib = [f"{size[k] / 1024:.1f}" for k in ("float", "lce", "lce")]
        rows = [("size KiB", *kib, "")]
        for n in lat["float"]:
            ms = [f"{lat[k][n]:.2f}" for k in ("float", "lce", "lce_no_xnnpack")]
            rows.append((f"latency {n} thr ms", *ms, f"{res['lce_speedup'][n]:.2f}x"))
        head = ("", "float TFLite", "LCE", "LCE no XNNPACK", "LCE speed-up")
        out += _table(head, rows)
        out.append(
            "summary: LCE vs float "
            + ", ".join(f"{v:.2f}x faster at {n} thr" for n, v in res["lce_speedup"].items())
            + f", {res['size_ratio']:.1f}x smaller"
        )
    if results.get("errors"):
        out += ["", "errors: " + "; ".join(f"{k}: {v}" for k, v in results["errors"].items())]
    return "\n".join(out)
