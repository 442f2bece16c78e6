"""Draw bench/soak.py's JSON lines: programs/s, RSS per process, database size, bytes per program.

    .venv/bin/python bench/soak_plot.py soak.jsonl [--html soak.html] [--png docs/img/soak.png]

Plotly, as the dashboard uses (an optional dependency, installed with the dashboard). The HTML
embeds the installed plotly.min.js, so it opens offline. The PNG is a screenshot of that HTML in
Debian's Chromium driven by Playwright (headless, --no-sandbox, the browser tests' launch flags;
never `playwright install`), so no image-export package is needed.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "dashboard"))

WIDTH = 1000


def height(rows: int) -> int:
    return 240 * rows + 180


def load(path: Path) -> tuple[dict, list[dict], dict]:
    start, minutes, summary = {}, [], {}
    for raw in path.read_text().splitlines():
        rec = json.loads(raw)
        if rec["event"] == "start":
            start = rec
        elif rec["event"] == "minute":
            minutes.append(rec)
        elif rec["event"] == "summary":
            summary = rec
    if not minutes:
        raise SystemExit(f"{path}: no minute lines")
    return start, minutes, summary


def long_lived(minutes: list[dict]) -> list[tuple[int, str]]:
    """(pid, role) of the processes seen in at least half the samples (not the short-lived
    sandbox children), in order of first appearance."""
    seen: dict[int, list] = {}
    for m in minutes:
        for p in m["processes"]:
            seen.setdefault(p["pid"], [p["role"], 0])[1] += 1
    return [(pid, role) for pid, (role, n) in seen.items() if n * 2 >= len(minutes)]


def figure(start: dict, minutes: list[dict], summary: dict):
    from plotly.subplots import make_subplots
    import plotly.graph_objects as go

    x = [m["t"] / 60 for m in minutes]
    cpu = any(m.get("cpu_ms_per_program") for m in minutes)  # older runs did not record it
    titles = ["programs/s (each minute) and 1-min load average (dotted, right)",
              "RSS per process (MB)", "database size (MB)", "bytes per program"]
    if cpu:
        titles.insert(1, "CPU ms per program: evoforge process, fork-server with its sandbox runs")
    rows = len(titles)
    fig = make_subplots(rows=rows, cols=1, shared_xaxes=True, vertical_spacing=0.045,
                        specs=[[{"secondary_y": True}], *[[{}]] * (rows - 1)], subplot_titles=titles)
    row = {"rss": rows - 2, "db": rows - 1, "bpp": rows}
    if cpu:
        for role in ("evoforge", "forkserver"):
            fig.add_trace(go.Scatter(x=x, y=[(m.get("cpu_ms_per_program") or {}).get(role) for m in minutes],
                                     name=f"{role} CPU ms/program", mode="lines"), row=2, col=1)
    fig.add_trace(go.Scatter(x=x, y=[m["rate"] for m in minutes], name="programs/s",
                             mode="lines+markers", marker={"size": 4}), row=1, col=1)
    fig.add_trace(go.Scatter(x=x, y=[m["load1"] for m in minutes], name="load1",
                             line={"dash": "dot", "color": "gray"}), row=1, col=1, secondary_y=True)
    for pid, role in long_lived(minutes):
        ys = [next((p["rss"] / 2**20 for p in m["processes"] if p["pid"] == pid), None) for m in minutes]
        fig.add_trace(go.Scatter(x=x, y=ys, name=f"{role} {pid}", mode="lines"), row=row["rss"], col=1)
    fig.add_trace(go.Scatter(x=x, y=[m["db_bytes"] / 2**20 for m in minutes], name="database",
                             mode="lines"), row=row["db"], col=1)
    fig.add_trace(go.Scatter(x=x, y=[m["bytes_per_program"] for m in minutes], name="bytes/program",
                             mode="lines"), row=row["bpp"], col=1)
    fig.update_yaxes(rangemode="tozero")
    fig.update_xaxes(title_text="minutes", row=rows, col=1)
    machine = start.get("machine", {})
    title = (f"evoforge soak: {start.get('command', ['', '', '?'])[2]}, "
             f"commit {start.get('commit', '?')[:7]}, {machine.get('cpus', '?')} cores")
    if summary.get("rate_last_over_first") is not None:
        title += (f"<br><sup>rate last/first {summary['window_minutes']} min: "
                  f"{summary['rate_last_over_first']}, {summary['programs']} programs, "
                  f"{summary['bytes_per_program']:.0f} B/program</sup>")
    fig.update_layout(title=title, width=WIDTH, height=height(rows), template="plotly_white",
                      legend={"orientation": "h", "y": -0.06}, margin={"t": 90, "b": 80})
    return fig


def html(fig) -> str:
    import plotly.offline

    return fig.to_html(include_plotlyjs=plotly.offline.get_plotlyjs(), full_html=True,
                       config={"staticPlot": True})


def screenshot(page_html: str, png: Path) -> None:
    from playwright.sync_api import sync_playwright
    from browser import CHROMIUM, CHROMIUM_ARGS, missing

    why = missing()
    if why:
        raise SystemExit(f"no PNG: {why}")
    with tempfile.TemporaryDirectory() as tmp:
        page_file = Path(tmp) / "soak.html"
        page_file.write_text(page_html)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            try:
                page = browser.new_page(viewport={"width": WIDTH, "height": height(5)})
                page.goto(page_file.as_uri())
                page.wait_for_selector(".main-svg", timeout=30_000)
                page.locator(".plotly-graph-div").screenshot(path=str(png))
            finally:
                browser.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("jsonl", type=Path)
    ap.add_argument("--html", type=Path)
    ap.add_argument("--png", type=Path)
    args = ap.parse_args()
    page = html(figure(*load(args.jsonl)))
    if args.html:
        args.html.write_text(page)
        print(f"wrote {args.html}")
    if args.png:
        args.png.parent.mkdir(parents=True, exist_ok=True)
        screenshot(page, args.png)
        print(f"wrote {args.png} ({args.png.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
