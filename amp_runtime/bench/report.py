"""Summaries of latency samples and the result table `amp-runtime bench` prints."""

from __future__ import annotations

import msgspec


class BenchSummary(msgspec.Struct, kw_only=True):
    name: str
    mode: str
    requests: int
    ok: int
    errors: int
    elapsed_s: float
    per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    first_event_p50_ms: float | None = None
    events_per_s: float | None = None
    ok_batches: int | None = None  # --batch: requests answered 2xx (ok counts tasks)
    statuses: dict[str, int] = {}


def percentile(samples: list[float], q: float) -> float:
    if not samples:
        return 0.0
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def summarize(name: str, mode: str, result) -> BenchSummary:
    lat = result.latencies_s
    ms = lambda s: round(s * 1000, 3)  # noqa: E731
    return BenchSummary(
        name=name, mode=mode, requests=len(lat) + result.errors, ok=result.ok,
        errors=result.errors + sum(n for s, n in result.statuses.items() if s >= 300),
        elapsed_s=round(result.elapsed_s, 3),
        per_s=round(result.ok / result.elapsed_s, 1) if result.elapsed_s else 0.0,
        p50_ms=ms(percentile(lat, 0.5)), p90_ms=ms(percentile(lat, 0.9)),
        p99_ms=ms(percentile(lat, 0.99)), max_ms=ms(max(lat, default=0.0)),
        first_event_p50_ms=ms(percentile(result.first_event_s, 0.5)) if result.first_event_s else None,
        events_per_s=round(result.events / result.elapsed_s, 1) if result.events and result.elapsed_s else None,
        statuses={str(k): v for k, v in sorted(result.statuses.items())},
    )


def table(rows: list[BenchSummary]) -> str:
    header = f"{'case':<28} {'mode':<8} {'ok':>8} {'err':>5} {'tasks/s':>10} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8}"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{r.name:<28} {r.mode:<8} {r.ok:>8} {r.errors:>5} {r.per_s:>10.1f} {r.p50_ms:>8.2f} "
                     f"{r.p90_ms:>8.2f} {r.p99_ms:>8.2f} {r.max_ms:>8.2f}")
        if r.first_event_p50_ms is not None:
            lines.append(f"{'':<28} first event p50 {r.first_event_p50_ms:.2f} ms"
                         + (f", {r.events_per_s:.0f} events/s" if r.events_per_s else ""))
    return "\n".join(lines)
