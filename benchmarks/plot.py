"""Latency against offered load, for both servers, as a PNG next to the table:
where each one's latency starts to climb says more than any single row.

matplotlib is optional (the ``bench`` extra): without it the table is still
written and one line says how to get the plot.
"""


def write(points: dict[str, list[tuple[float, float, float]]], path: str, title: str) -> bool:
    """Plot C{points} ({server: [(msg/s in, p50 s, p99 s), ...]}) into C{path}.

    @return: whether the plot was written.
    """
    try:
        import matplotlib
    except ImportError:
        print("no plot: matplotlib is missing (pip install '.[bench]')")
        return False
    matplotlib.use("Agg")
    from matplotlib import pyplot, ticker

    figure, axes = pyplot.subplots(figsize=(8, 5), dpi=120)
    colours = {"relay": "tab:blue", "daemon": "tab:red"}
    labels = {"relay": "bare relay", "daemon": "securechat"}
    for kind, series in sorted(points.items()):
        series = sorted(series)
        rates = [rate for rate, _, _ in series]
        for index, (percentile, style) in enumerate((("p50", "-"), ("p99", "--")), 1):
            axes.plot(rates, [point[index] * 1000 for point in series], style, marker="o",
                      color=colours.get(kind), label=f"{labels.get(kind, kind)} {percentile}")
    axes.set_xlabel("load taken in (messages/s acknowledged)")
    axes.set_ylabel("delivery latency (ms, log scale)")
    axes.set_yscale("log")
    # Plain milliseconds at 1-2-5 steps: powers of ten alone are hard to read off.
    axes.yaxis.set_major_locator(ticker.LogLocator(subs=(1, 2, 5)))
    axes.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    axes.yaxis.set_minor_formatter(ticker.NullFormatter())
    axes.set_xlim(left=0)
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    pyplot.close(figure)
    return True
