"""compiled_iter: the compiled WalReader.iter against the pure-Python fallback, each in a fresh process."""

from __future__ import annotations

from harness import Bench, Figure, Spec, alternate, median, run_worker


def measure(b: Bench, spec: Spec) -> Figure:
    """The codec is chosen at import, so each side runs in a fresh interpreter (_worker.py iter)."""
    fig = Figure(spec)
    n = b.sizes.iter_entries
    path = b.log_with(n)
    impls: dict[str, set] = {"subject": set(), "baseline": set()}
    passes: dict[str, list] = {"subject": [], "baseline": []}

    def one(pure: bool) -> float:
        # Two passes per fresh process; the second (warm: buffers allocated, code paths hot) counts.
        res = run_worker("iter", {"path": path, "repeats": 2}, pure=pure)
        side = "baseline" if pure else "subject"
        impls[side].add(res["implementation"])
        passes[side].append(res["seconds"])
        assert res["count"] == n, res["count"]
        return n / res["seconds"][-1]

    base, subj = alternate(b.sizes.repeats, lambda: one(True), lambda: one(False))
    if impls["subject"] != {"cython"} or impls["baseline"] != {"python"}:
        raise RuntimeError(f"wrong implementations ran: {impls} (build the extension: make build)")
    fig.add_ratio(spec.name, subj, base)
    fig.data.update(entries=n, pass_seconds=passes)
    fig.notes.append(f"per entry: compiled {1e9 / median(subj):.0f} ns, pure Python {1e9 / median(base):.0f} ns")
    return fig
