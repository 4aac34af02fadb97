"""Self-contained HTML: a token heatmap per text, several methods side by side, no network and no script."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # typing only: results.py imports this module to render, never the other way at run time
    from .results import Attribution, TokenAttribution

POSITIVE = (26, 152, 80)  # towards the target: green
NEGATIVE = (215, 48, 39)  # against it: red
MAGNITUDE = (49, 54, 149)  # unsigned scores (how much, not which way): white to blue
#: methods whose scores have no sign (saliency is the norm of the gradient): painted on the one-way scale
UNSIGNED_METHODS = frozenset({"saliency"})

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:20px;margin:0 0 4px} .sub{color:#666;font-size:13px;margin-bottom:16px}
.legend{display:flex;align-items:center;gap:8px;font-size:13px;margin:8px 0 20px}
.bar{width:240px;height:14px;border:1px solid #ccc;
 background:linear-gradient(90deg,rgb(215,48,39),#fff 50%,rgb(26,152,80))}
.bar.mag{background:linear-gradient(90deg,#fff,rgb(49,54,149))}
h2{font-size:16px;margin:24px 0 8px} table.grid{width:auto} table.grid td,table.grid th{border:1px solid #ddd;
 padding:4px 8px;font-size:13px;text-align:right} table.grid th{background:#f6f6f6} table.grid td.l{text-align:left}
.ev{font-size:13px;color:#333;margin-top:6px} .ev li{margin:2px 0}
.card{border:1px solid #ddd;border-radius:8px;padding:12px 16px;margin:0 0 16px}
.meta{font-size:13px;color:#444;margin-bottom:8px} .meta b{color:#000}
table{border-collapse:collapse;width:100%} td{vertical-align:top;padding:6px 8px;border-top:1px solid #eee}
td.m{width:150px;font-size:13px;color:#333;white-space:nowrap} .delta{color:#777;font-size:12px}
.tok{display:inline-block;padding:2px 4px;margin:2px 1px;border-radius:3px;font-family:ui-monospace,Menlo,monospace;
 font-size:14px;border:1px solid rgba(0,0,0,.08)} .sp{color:#888}
.warn{color:#a15c00;font-size:12px}
"""


def _colour(score: float, peak: float, signed: bool = True) -> str:
    a = min(abs(score) / peak, 1.0) if peak > 0 else 0.0
    r, g, b = (POSITIVE if score >= 0 else NEGATIVE) if signed else MAGNITUDE
    mix = [round(255 + (c - 255) * a) for c in (r, g, b)]
    return f"rgb({mix[0]},{mix[1]},{mix[2]})"


def is_signed(method: str) -> bool:
    """Whether a method's scores say which way (towards / against the target), not only how much."""
    return method.split(" @ ")[0] not in UNSIGNED_METHODS  # "saliency @ 3 token (label)": token classification


def _tokens(r: Attribution) -> str:
    return heatmap(r.tokens, r.offsets, r.scores, signed=is_signed(r.method))


def heatmap(tokens: Sequence[str], offsets: Sequence[Sequence[int]], scores: Any, *, signed: bool = True) -> str:
    """The token spans of one explanation, coloured by score (diverging when ``signed``, one-way otherwise)."""
    peak = float(max((abs(float(s)) for s in scores), default=0.0))
    out = []
    for i, (tok, s) in enumerate(zip(tokens, scores)):
        a, b = offsets[i]
        cls = "tok sp" if a == b else "tok"
        ink = ";color:#fff" if peak > 0 and abs(float(s)) / peak > 0.6 else ""
        out.append(f'<span class="{cls}" data-score="{float(s):.8g}" style="background:{_colour(float(s), peak, signed)}{ink}" '
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
    explanations = _expand(results)
    groups: dict[tuple[str, int], list[Any]] = {}
    for r in explanations:
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
    methods = {r.method for r in explanations}
    legend = _legend(signed=any(is_signed(m) for m in methods),
                     unsigned=sorted(m for m in methods if not is_signed(m)))
    n_texts = len({text for text, _ in groups})
    targets = f", {len(groups)} (text, target) pair(s)" if len(groups) != n_texts else ""
    return _page(title, f'<div class="sub">{n_texts} text(s){targets}, {len(explanations)} explanation(s)</div>{legend}'
                 + "".join(cards))


def _legend(*, signed: bool = True, unsigned: Sequence[str] = ()) -> str:
    parts = []
    if signed:
        parts.append('<div class="legend" id="legend"><span>against the target</span><span class="bar"></span>'
                     '<span>towards the target</span><span style="color:#666">(colour scaled to each row\'s largest '
                     '|score|; hover a token for its exact score)</span></div>')
    if unsigned:
        parts.append(f'<div class="legend" id="{"legend" if not signed else "legend-unsigned"}"><span>0</span>'
                     '<span class="bar mag"></span><span>largest</span><span style="color:#666">'
                     f'({html.escape(", ".join(unsigned))}: a magnitude without a sign, so it says how much a token '
                     'matters, not whether it pushes towards or against the target)</span></div>')
    return "".join(parts)


def _page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>\n")


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]], left: int = 1) -> str:
    """A small grid; the first ``left`` columns left-aligned (text), the rest right-aligned (numbers)."""
    th = "".join(f"<th>{html.escape(str(h))}</th>" for h in head)
    body = "".join("<tr>" + "".join(f'<td{" class=l" if j < left else ""}>{html.escape(str(c))}</td>'
                                    for j, c in enumerate(row)) + "</tr>" for row in rows)
    return f'<table class="grid"><tr>{th}</tr>{body}</table>'


def render_report(rep: Mapping[str, Any], *, title: str = "xai-onnx report", source: str = "", n_errors: int = 10) -> str:
    """The debugging report (:func:`xai_onnx.report.debug_report`'s dict) as one self-contained page: accuracy,
    confusion, the worst errors with their heatmaps and evidence, the class words, prototypes and influence."""
    labels = list(rep["labels"])
    parts = [f'<div class="sub">{rep["n"]} labelled example(s){" from " + html.escape(source) if source else ""}; '
             f'attributions by {html.escape(str(rep["method"]))}</div>']
    errors = rep["misclassified"]
    parts.append(f'<h2>Accuracy</h2><p id="accuracy"><b>{rep["accuracy"]:.1%}</b> ({rep["n"] - len(errors)} of {rep["n"]} '
                 f'correct, {len(errors)} misclassified)</p>')
    conf = rep["confusion"]["rows_true_columns_predicted"]
    parts.append("<h2>Confusion</h2><p class=sub>rows: true label; columns: predicted label</p>"
                 + _table(["true \\ predicted", *labels], [[lab, *row] for lab, row in zip(labels, conf)]))
    parts.append(f"<h2>The worst errors</h2><p class=sub>the {min(n_errors, len(errors))} most confident of {len(errors)} "
                 "misclassified examples; the heatmap explains the (wrong) predicted class</p>")
    signed = is_signed(str(rep["method"]))
    if errors:
        parts.append(_legend(signed=signed, unsigned=[] if signed else [str(rep["method"])]))
    for m in errors[:n_errors]:
        where = f'row {m["row"]}' if "row" in m else f'example {m["index"]}'
        if "id" in m:
            where += f', id {m["id"]}'
        ev = ""
        if "evidence" in m:
            e = m["evidence"]

            def li(items: Sequence[Mapping[str, Any]], score: bool = True) -> str:
                return "".join(f'<li>{(format(n["score"], "+.4f") + " ") if score else ""}[{html.escape(str(n["label"]))}] '
                               f'{html.escape(str(n["text"]))}</li>' for n in items)
            ev = (f'<div class="ev"><b>Training examples that support this prediction</b> (TracIn proponents)'
                  f'<ul>{li(e["proponents"])}</ul><b>... that oppose it</b> (opponents)<ul>{li(e["opponents"])}</ul>'
                  f'<b>Nearest prototypes</b><ul>{li(e["nearest_prototypes"], score=False)}</ul></div>')
        parts.append(
            f'<div class="card error"><div class="meta">{html.escape(where)}: true <b>{html.escape(str(m["gold_label"]))}'
            f'</b>, predicted <b>{html.escape(str(m["label"]))}</b> ({m["probabilities"][m["label"]]:.3f})</div>'
            f'<div class="text">{html.escape(str(m["text"]))}</div>'
            f'<div>{heatmap(m["tokens"], m["offsets"], m["scores"], signed=signed)}</div>{ev}</div>')
    cw = rep.get("class_words", {})
    kept = rep.get("class_words_settings", {})
    parts.append("<h2>Words that push towards each class</h2><p class=sub>mean attribution of each whole word in the "
                 f"explanations of that class, seen at least {kept.get('min_count', '?')} times; stop words and "
                 f"punctuation {html.escape(str(kept.get('stop_words_and_punctuation', 'left out')))}</p>")
    for lab, rows in cw.items():
        table = (_table(["word", "mean score", "count"], [[r["word"], f'{r["mean_score"]:+.4f}', r["count"]] for r in rows])
                 if rows else '<p class=sub>no word seen often enough in the explanations of this class</p>')
        parts.append(f'<div class="card words" data-label="{html.escape(lab)}"><b>{html.escape(lab)}</b>{table}</div>')
    if "prototypes" in rep:
        parts.append("<h2>Prototypes and criticisms of the training data</h2><p class=sub>prototypes: examples that "
                     "represent the class; criticisms: examples the prototypes represent worst (MMD-critic)</p>")
        for g in rep["prototypes"]:
            parts.append(f'<div class="card"><b>{html.escape(str(g["label"]))}</b><div class="ev">prototypes<ul>'
                         + "".join(f"<li>{html.escape(t)}</li>" for t in g["prototype_texts"]) + "</ul>criticisms<ul>"
                         + "".join(f"<li>{html.escape(t)}</li>" for t in g["criticism_texts"]) + "</ul></div></div>")
    if "self_influence_top" in rep:
        parts.append("<h2>The most self-influential training examples</h2><p class=sub>high self-influence: the model "
                     "finds the example hard; mislabelled examples gather here</p>"
                     + _table(["index", "label", "score", "text"], [[s["index"], s["label"], f'{s["score"]:.4f}', s["text"]]
                                                                    for s in rep["self_influence_top"]], left=0))
    return _page(title, "".join(parts))
