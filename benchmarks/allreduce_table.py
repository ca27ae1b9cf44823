"""Print the markdown table of docs/performance.md from a `bench allreduce` JSON file.

    python benchmarks/allreduce_table.py benchmarks/results/allreduce-np2.json
"""

import json
import sys


def fmt_size(n: int) -> str:
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} B"


def main(path: str) -> None:
    with open(path, encoding="utf-8") as fh:
        doc = json.load(fh)
    rows = {(r["impl"], r["nbytes"]): r for r in doc["rows"]}
    impls = [i for i in ("tree", "native", "pickle", "gloo", "memcpy")
             if any(k[0] == i for k in rows)]
    sizes = sorted({k[1] for k in rows})
    print(f"`{doc['command']}` ({doc['when']}, {doc['ranks']} ranks, {doc['cpus']} cores)\n")
    print("| size | " + " | ".join(f"{i} latency" for i in impls) +
          " | tree busbw | native busbw | tree/native busbw | tree/gloo busbw |")
    print("|---" * (len(impls) + 5) + "|")
    for n in sizes:
        cells = []
        for i in impls:
            r = rows.get((i, n))
            cells.append(f"{r['seconds'] * 1e6:,.1f} us" if r else "-")
        t, na, gl = rows.get(("tree", n)), rows.get(("native", n)), rows.get(("gloo", n))
        tb = f"{t['busbw']:.3f} GB/s" if t else "-"
        nb = f"{na['busbw']:.3f} GB/s" if na else "-"
        rn = f"{t['busbw'] / na['busbw']:.2f}x" if t and na else "-"
        rg = f"{t['busbw'] / gl['busbw']:.2f}x" if t and gl else "-"
        print(f"| {fmt_size(n)} | " + " | ".join(cells) + f" | {tb} | {nb} | {rn} | {rg} |")
    print("\n| target (2 ranks) | measured | verdict |\n|---|---|---|")
    for t in doc.get("targets", []):
        print(f"| {t['target']} | {t['measured']} | {'met' if t['met'] else 'missed'} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/allreduce-np2.json")
