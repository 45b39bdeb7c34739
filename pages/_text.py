"""Data as text: what a data set chose (class names, sample ids, paths, run and annotator names)
shown by a Streamlit element that renders Markdown.

st.markdown, st.caption, st.write of a string, st.title/header/subheader, st.info/warning/error,
st.metric, st.tabs, st.expander and every widget label render Markdown, and so does a radio's
option. A class name ``![pix](http://host/track.png)`` there becomes an image that every
annotator's browser fetches from an address the data set chose; ``[x](javascript:...)`` a link.
``plain`` makes such text print as itself. ``plain_html`` does the same for plotly, whose hover
text, axis titles and legend render a subset of HTML (``<a href>``, ``<img>`` is dropped, but
``<b>``/``<br>`` and links are not).
"""

from __future__ import annotations

import html
import re

# CommonMark lets a backslash escape any ASCII punctuation, and the escaped character is always
# printed literally. Escaping all of it (not only today's specials) also covers GFM tables (|),
# strikethrough (~), math ($), Streamlit's ``:red[...]``/``:material/x:`` directives (:) and raw
# HTML (<, &).
_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")
# GFM's autolink literals (``http://host``, ``www.host``, ``name@host``) are found in the text
# after escapes are resolved (remark-gfm), so no escape stops them: Streamlit would draw a link
# to an address the data chose. An invisible word joiner (U+2060) inside the pattern does.
_AUTOLINKS = re.compile(r"(?<=:)(?=//)|(?<=www)(?=\.)|(?=@)", re.IGNORECASE)
WORD_JOINER = "\u2060"
# A line break inside a label could start a block (a heading, a list, an indented code block);
# Markdown would fold a single one into a space anyway.
_LINE_BREAKS = re.compile(r"\s*[\r\n]+\s*")


def plain(text: object) -> str:
    """``text`` as Markdown that Streamlit renders literally (for a label, caption, markdown...).

    Shown, it reads as ``text``; copied, it carries an invisible U+2060 wherever ``text`` would
    have made a link (after the ``:`` of ``http://``, before the ``.`` of ``www.`` and before ``@``)."""
    text = _AUTOLINKS.sub(WORD_JOINER, _LINE_BREAKS.sub(" ", str(text)))
    return _PUNCTUATION.sub(r"\\\1", text)


def plain_html(text: object) -> str:
    """``text`` for plotly's HTML-ish labels (hover text, axis titles, legend, annotations)."""
    # No tag can open without "<", so quotes stay as they are.
    return html.escape(str(text), quote=False)


def code(text: object) -> str:
    """``text`` as an inline code span: printed literally, in monospace (ids, run names, paths).

    Nothing inside a code span is Markdown; only a run of backticks as long as the fence closes
    it, so the fence is one backtick longer than the longest run in the text. Streamlit rewrites
    ``:material/`` in the raw source, code spans included; such text goes out escaped instead."""
    text = _LINE_BREAKS.sub(" ", str(text))
    if ":material/" in text:
        return plain(text)
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    # A space on each side keeps a leading or trailing backtick off the fence (CommonMark strips one).
    pad = " " if text.startswith("`") or text.endswith("`") or not text.strip(" ") else ""
    return f"{fence}{pad}{text}{pad}{fence}"
