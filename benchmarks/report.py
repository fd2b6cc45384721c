"""How the figures are shown: one Markdown report, printed as it grows, with
every figure of ours next to the relay's and their ratio."""


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def ratio(ours: float, base: float) -> str:
    return f"{ours / base:.2f}×" if base else "-"


def median(outcomes: list, key):
    """The run with the median C{key}: its figures stay consistent together."""
    return sorted(outcomes, key=key)[len(outcomes) // 2]


class Table:
    """The report: a heading, the rows of every scenario, then other sections."""

    def __init__(self, heading: str):
        self.lines = [f"# {heading}", "",
                      "| scenario | metric | bare relay | securechat | ratio |",
                      "|---|---|---|---|---|"]

    def rows(self, scenario: str, rows: list[tuple]) -> None:
        """(metric, relay, daemon, ratio or target) rows of one scenario."""
        added = [f"| {scenario} | {metric} | {base} | {ours} | {ratio} |"
                 for metric, base, ours, ratio in rows]
        self.lines += added
        print("\n".join(added), flush=True)

    def section(self, header: list[str], rows: list[list[str]]) -> None:
        added = ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        added += ["| " + " | ".join(row) + " |" for row in rows]
        self.lines += added
        print("\n".join(added), flush=True)

    def write(self, path: str) -> None:
        with open(path, "w") as f:
            f.write("\n".join(self.lines) + "\n")
