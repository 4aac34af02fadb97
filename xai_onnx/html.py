"""Self-contained HTML: a token heatmap per text, several methods side by side, no network and no script."""

from __future__ import annotations

import html
from collections.abc import Sequence
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # typing only: results.py imports this module to render, never the other way at run time
    from .results import Attribution, TokenAttribution

POSITIVE = (26, 152, 80)  # towards the target: green
NEGATIVE = (215, 48, 39)  # against it: red

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:20px;margin:0 0 4px} .sub{color:#666;font-size:13px;margin-bottom:16px}
.legend{display:flex;align-items:center;gap:8px;font-size:13px;margin:8px 0 20px}
.bar{width:240px;height:14px;border:1px solid #ccc;
 background:linear-gradient(90deg,rgb(215,48,39),#fff 50%,rgb(26,152,80))}
.card{border:1px solid #ddd;border-radius:8px;padding:12px 16px;margin:0 0 16px}
.meta{font-size:13px;color:#444;margin-bottom:8px} .meta b{color:#000}
table{border-collapse:collapse;width:100%} td{vertical-align:top;padding:6px 8px;border-top:1px solid #eee}
td.m{width:150px;font-size:13px;color:#333;white-space:nowrap} .delta{color:#777;font-size:12px}
.tok{display:inline-block;padding:2px 4px;margin:2px 1px;border-radius:3px;font-family:ui-monospace,Menlo,monospace;
 font-size:14px;border:1px solid rgba(0,0,0,.08)} .sp{color:#888}
.warn{color:#a15c00;font-size:12px}
"""


def _colour(score: float, peak: float) -> str:
    a = min(abs(score) / peak, 1.0) if peak > 0 else 0.0
    r, g, b = POSITIVE if score >= 0 else NEGATIVE
    mix = [round(255 + (c - 255) * a) for c in (r, g, b)]
    return f"rgb({mix[0]},{mix[1]},{mix[2]})"


def _tokens(r: Attribution) -> str:
    peak = float(max((abs(float(s)) for s in r.scores), default=0.0))
    out = []
    for i, (tok, s) in enumerate(zip(r.tokens, r.scores)):
        a, b = r.offsets[i]
        cls = "tok sp" if a == b else "tok"
        ink = ";color:#fff" if peak > 0 and abs(float(s)) / peak > 0.6 else ""
        out.append(f'<span class="{cls}" data-score="{float(s):.8g}" style="background:{_colour(float(s), peak)}{ink}" '
                   f'title="{html.escape(tok)}: {float(s):+.6g}">{html.escape(tok)}</span>')
    return "".join(out)


def _expand(results: Sequence[Attribution | TokenAttribution]) -> list[Any]:
    """A token-classification result (it has ``positions``) becomes one row per explained position, all on the
    text's card; the rows carry the attributes the cards read."""
    out: list[Any] = []
    for item in results:
        r: Any = item
        if getattr(r, "positions", None) is None:
            out.append(r)
            continue
        for p in r.positions:
            out.append(SimpleNamespace(
                text=r.text, text_pair=r.text_pair, method=f"{r.method} @ {p.position} {p.token} ({p.target.label})",
                tokens=r.tokens, offsets=r.offsets, scores=p.scores, target=SimpleNamespace(index=-1, label="per position"),
                label=", ".join(sorted(set(r.predicted))), probabilities={}, output=r.output,
                convergence_delta=p.convergence_delta, settings=r.settings, warnings=r.warnings))
    return out


def render(results: Sequence[Attribution | TokenAttribution], *, title: str = "xai-onnx explanations") -> str:
    """One HTML page: a card per (text, target) with one heatmap row per method, in first-seen order; the two texts
    of a pair on two lines; one row per explained position for token classification."""
    rows = _expand(results)
    groups: dict[tuple[str, int], list[Any]] = {}
    for r in rows:
        groups.setdefault((r.text, r.target.index), []).append(r)
    cards = []
    for (text, _), rs in groups.items():
        first = rs[0]
        probs = ", ".join(f"{html.escape(k)} {v:.3f}" for k, v in first.probabilities.items())
        rows = []
        for r in rs:
            settings = ", ".join(f"{k}={v}" for k, v in r.settings.items() if k not in ("baseline", "output"))
            delta = (f'<div class="delta">convergence delta {r.convergence_delta:+.2e}</div>'
                     if r.convergence_delta is not None else "")
            rows.append(f'<tr class="method" data-method="{html.escape(r.method)}"><td class="m"><b>{html.escape(r.method)}</b>'
                        f'<div class="delta">{html.escape(settings)}</div>{delta}</td><td>{_tokens(r)}</td></tr>')
        warn = "".join(f'<div class="warn">{html.escape(w)}</div>' for w in first.warnings)
        cards.append(
            f'<div class="card"><div class="meta">predicted <b>{html.escape(first.label)}</b> ({probs}); target '
            f'<b>{html.escape(first.target.label)}</b>; output {html.escape(first.output)}, baseline '
            f'{html.escape(str(first.settings.get("baseline", "")))}</div><div class="text">{html.escape(text)}</div>'
            + (f'<div class="text pair">{html.escape(first.text_pair)}</div>' if first.text_pair is not None else "")
            + f'{warn}<table>{"".join(rows)}</table></div>')
    legend = ('<div class="legend" id="legend"><span>against the target</span><span class="bar"></span>'
              '<span>towards the target</span><span style="color:#666">(colour scaled to each row\'s largest |score|;'
              ' hover a token for its exact score)</span></div>')
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"
            f'<div class="sub">{len(groups)} text(s), {len(rows)} explanation(s)</div>{legend}{"".join(cards)}'
            "</body></html>\n")
