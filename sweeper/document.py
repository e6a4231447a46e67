"""Reports as one list of blocks (text, tables, figures), rendered as markdown and HTML.

The markdown links its figures, written beside it as PNG files; the HTML page is
self-contained (figures as data URIs, inline CSS, no scripts). Both always say the same.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweeper.report import cell_text
from trainables.files import atomic_write_bytes

CSS = """body{font-family:system-ui,sans-serif;max-width:1150px;margin:2em auto;padding:0 1em}
h2{border-top:2px solid #ddd;padding-top:.8em;margin-top:2em} .diverged,.fail{color:#b00020}
.identical,.pass{color:#17692e} .not_comparable,.incomplete,.inconclusive{color:#8a5a00}
p.pass,p.fail,p.inconclusive{font-weight:700} p.note{border-left:4px solid #e0a800;padding:0 .6em}
table{border-collapse:collapse;margin:.4em 0 1em;font-size:.85em} th{background:#f3f3f3}
th,td{border:1px solid #ccc;padding:.2em .6em;text-align:left} td.mark{background:#ffe08a}
img{max-width:100%} figure{margin:0} figcaption{font-size:.85em;color:#555}"""


@dataclass(frozen=True)
class Text:
    """A heading (``level`` 1-3) or a paragraph (level 0); ``css`` styles it (bold in markdown)."""

    text: str
    level: int = 0
    css: str = ""

    def markdown(self) -> str:
        """Markdown text."""
        if self.level:
            return f"{'#' * self.level} {markdown_text(self.text)}"
        return f"**{markdown_text(self.text)}**" if self.css else markdown_text(self.text)

    def html(self) -> str:
        """An HTML element."""
        tag = f"h{self.level}" if self.level else "p"
        css = f' class="{html.escape(self.css)}"' if self.css else ""
        return f"<{tag}{css}>{html.escape(self.text)}</{tag}>"


@dataclass(frozen=True)
class Table:
    """Rows of a table; ``marked`` holds the (row index, column) cells to highlight."""

    rows: list[dict[str, Any]]
    marked: frozenset[tuple[int, str]] = frozenset()

    def markdown(self) -> str:
        """A markdown table."""
        lines = [[markdown_text(c) for c in self.rows[0]], ["---"] * len(self.rows[0])]
        for i, row in enumerate(self.rows):
            cells = {c: markdown_text(cell_text(v)) for c, v in row.items()}
            lines.append([f"**{v}**" if (i, c) in self.marked else v for c, v in cells.items()])
        return "\n".join(f"| {' | '.join(line)} |" for line in lines)

    def html(self) -> str:
        """An HTML table."""
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.rows[0])
        body = "".join(
            "<tr>"
            + "".join(
                ('<td class="mark">' if (i, c) in self.marked else "<td>")
                + f"{html.escape(cell_text(v))}</td>"
                for c, v in row.items()
            )
            + "</tr>\n"
            for i, row in enumerate(self.rows)
        )
        return f"<table><thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody></table>"


@dataclass(frozen=True)
class Image:
    """A PNG figure: a file beside the markdown, a data URI in the HTML."""

    name: str  # the PNG's file name beside the markdown
    png: bytes
    caption: str
    alt: str = "figure"

    def markdown(self) -> str:
        """A markdown image with its caption."""
        return f"![{markdown_text(self.alt)}]({self.name})\n\n*{markdown_text(self.caption)}*"

    def html(self) -> str:
        """An HTML figure with the PNG inline."""
        data = base64.b64encode(self.png).decode("ascii")
        return (
            f'<figure><img alt="{html.escape(self.alt)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(self.caption)}</figcaption></figure>"
        )


def render(
    blocks: list[Any], title: str, markdown_path: Path, html_path: Path
) -> tuple[Path, Path]:
    """Write the blocks as markdown and as a self-contained HTML page, each atomically."""
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n<body>\n"
        + "\n".join(b.html() for b in blocks)
        + "\n</body></html>\n"
    )
    markdown = "\n\n".join(b.markdown() for b in blocks) + "\n"
    return (
        atomic_write_bytes(markdown_path, markdown.encode()),
        atomic_write_bytes(html_path, page.encode()),
    )


def markdown_text(text: Any) -> str:
    """Escape for markdown: HTML-escaped (renderers pass raw HTML through), markup-escaped."""
    text = html.escape(" ".join(str(text).split()), quote=False)
    text = re.sub(r"([\\`*\[\]|])", r"\\\1", text)
    return re.sub(r"(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])", r"\\_", text)
