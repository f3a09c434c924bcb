"""The README's generated sections: the configuration reference and the metrics catalogue.

Both come from code (the settings schema, the metrics registry), so the
documentation cannot drift: `python -m ghostream.docs` rewrites the marked
sections of README.md, and a test fails when they differ from the code.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from ghostream import monitoring
from ghostream.config import reference_markdown

README = Path(__file__).resolve().parent.parent / "README.md"
SUFFIX = {"counter": "_total", "info": "_info"}


def metrics_markdown() -> str:
    rows = ["| Metric | Type | Labels | What it counts |", "|---|---|---|---|"]
    for family in sorted(monitoring.REGISTRY.collect(), key=lambda f: f.name):
        if not family.name.startswith("ghostream_"):
            continue
        collector = _collector(family.name)
        # Metrics read at scrape time (SRT) have no declared labels: their samples show them.
        sampled = dict.fromkeys(k for sample in family.samples for k in sample.labels)
        labels = ", ".join(getattr(collector, "_labelnames", ()) or sampled)
        name = family.name + SUFFIX.get(family.type, "")
        rows.append(f"| `{name}` | {family.type} | {labels} | {family.documentation} |")
    return "\n".join(rows) + "\n"


def _collector(name: str) -> object | None:
    return next((c for c in vars(monitoring).values() if getattr(c, "_name", None) == name), None)


SECTIONS = {"configuration": reference_markdown, "metrics": metrics_markdown}


def render(text: str) -> str:
    for name, make in SECTIONS.items():
        pattern = re.compile(rf"(<!-- generated:{name} -->\n).*?(<!-- end:{name} -->)", re.DOTALL)
        text = pattern.sub(lambda m, make=make: m.group(1) + make() + m.group(2), text)
    return text


def main() -> int:
    text = README.read_text()
    README.write_text(render(text))
    print(f"updated {README}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
