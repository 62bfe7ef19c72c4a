"""Figure of benchmarks/inference_cost.py's CSV: cost of one acting step and recurrent-state memory against
the context GTrXL keeps (memory_len). GTrXL is a line over memory_len; AGaLiTe, GaLiTe and the LSTM keep a
fixed-size state, so they are horizontal lines (AGaLiTe at the paper's eta=4, r=2, with a band spanning the
other eta and r of the sweep).

    python plots/inference_cost_plot.py --csv benchmarks/results/inference_cost.csv
writes plots/inference_cost.png and plots/inference_cost.pdf (or --out PREFIX).
"""

import csv
import os
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import tyro  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


@dataclass
class Args:
    csv: str = os.path.join(os.path.dirname(HERE), "benchmarks", "results", "inference_cost.csv")
    """the CSV written by benchmarks/inference_cost.py"""
    out: str = os.path.join(HERE, "inference_cost")
    """output prefix: writes {out}.png and {out}.pdf"""
    agalite_eta: int = 4
    """AGaLiTe configuration drawn as the solid line (the others form the band); falls back to any present"""
    agalite_r: int = 2


def read(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row["batch"] = int(row["batch"])
    return rows


def num(row, col):
    value = row.get(col, "")
    return float(value) if value not in ("", None) else None


STYLE = {"agalite": dict(color="C0", ls="-"), "galite": dict(color="C2", ls=":"), "lstm": dict(color="C3", ls="--")}


def panel(ax, rows, col, batch, ref, title, ylabel, scale=1.0):
    rows = [r for r in rows if r["batch"] == batch and num(r, col) is not None]
    timing = col == "time_median_ms"  # timings get their p10-p90 spread (bars for GTrXL, dotted lines for AGaLiTe)
    gtrxl = sorted((int(r["memory_len"]), num(r, col) * scale, r) for r in rows if r["model"] == "gtrxl")
    if gtrxl:
        xs, ys, rs = zip(*gtrxl)
        yerr = [[y - num(r, "time_p10_ms") for y, r in zip(ys, rs)], [num(r, "time_p90_ms") - y for y, r in zip(ys, rs)]] if timing else None
        ax.errorbar(xs, ys, yerr=yerr, fmt="o-", color="C1", capsize=3, label="GTrXL (memory_len)" + (", p10-p90" if timing else ""))
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(x) for x in xs])
    for model in ("agalite", "galite", "lstm"):
        values = [(r, num(r, col) * scale) for r in rows if r["model"] == model]
        if not values:
            continue
        if model == "agalite":
            main = [v for r, v in values if r["config"] == ref] or [values[0][1]]
            lo, hi = min(v for _, v in values), max(v for _, v in values)
            ax.axhspan(lo, hi, color=STYLE[model]["color"], alpha=0.12, lw=0, label="AGaLiTe, eta x r sweep")
            main_row = next((r for r, _ in values if r["config"] == ref), values[0][0])
            ax.axhline(main[0], **STYLE[model], label=main_row["config"])
            if timing:
                for q in ("time_p10_ms", "time_p90_ms"):
                    ax.axhline(num(main_row, q), color=STYLE[model]["color"], ls=":", lw=0.8)
        else:
            ax.axhline(values[0][1], **STYLE[model], label=values[0][0]["config"])
    ax.set_yscale("log")
    ax.set_xlabel("GTrXL memory_len (context, steps)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")


def main(args: Args):
    rows = read(args.csv)
    batches = sorted({r["batch"] for r in rows})
    small, large = batches[0], batches[-1]
    ref = f"AGaLiTe eta={args.agalite_eta} r={args.agalite_r}"
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5))
    panel(axes[0, 0], rows, "time_median_ms", small, ref, f"time per acting step, batch {small}", "ms (median)")
    panel(axes[0, 1], rows, "time_median_ms", large, ref, f"time per acting step, batch {large}", "ms (median)")
    panel(axes[1, 0], rows, "flops_per_env_counted", small, ref, "FLOPs per step per env (matmul-like ops)", "FLOPs")
    panel(axes[1, 1], rows, "state_bytes_per_env", small, ref, "recurrent state / cache per env", "KiB", scale=1 / 1024)
    handles, labels = axes[1, 1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), fontsize=9, frameon=False)
    device = rows[0].get("device", "?") if rows else "?"
    threads = rows[0].get("threads", "?") if rows else "?"
    fig.suptitle(f"Acting cost vs context: AGaLiTe and GTrXL (T-Maze sizes; {device}, {threads} threads)", fontsize=11)
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    for ext in ("png", "pdf"):
        fig.savefig(f"{args.out}.{ext}", dpi=150)
    plt.close(fig)
    print(f"wrote {args.out}.png and {args.out}.pdf")


if __name__ == "__main__":
    main(tyro.cli(Args))
