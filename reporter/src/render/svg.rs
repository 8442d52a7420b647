//! Inline SVG charts: horizontal bars, stacked bars and line charts. No scripts, no external
//! fonts or images: the markup is part of the HTML file. They are maud templates, like the page
//! around them, so titles, labels and series names are escaped by the template engine.

use maud::{Markup, html};
use std::fmt::Write;

/// Palette shared by the charts (colour-blind friendly).
pub const COLOURS: [&str; 6] = [
    "#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9",
];

fn num(x: f64) -> String {
    if (x - x.round()).abs() < 1e-9 {
        format!("{}", x.round() as i64)
    } else {
        format!("{x:.1}")
    }
}

fn colour(i: usize) -> &'static str {
    COLOURS[i % COLOURS.len()]
}

// SVG elements are written with an empty body (`rect … {}`), never as HTML void elements:
// in HTML, `<rect>` without `/>` or `</rect>` stays open and swallows what follows.

/// Horizontal bars, one per `(label, value)`, scaled to `max` (or the largest value).
pub fn bars(title: &str, items: &[(String, f64)], max: Option<f64>, unit: &str) -> Markup {
    let row = 26.0;
    let label_w = 170.0;
    let bar_w = 360.0;
    let h = num(30.0 + row * items.len().max(1) as f64);
    let max = max
        .unwrap_or_else(|| items.iter().map(|i| i.1).fold(0.0, f64::max))
        .max(1e-9);
    html! {
        svg class="chart" role="img" aria-label=(title) width="600" height=(h) viewBox={ "0 0 600 " (h) } {
            title { (title) }
            text x="0" y="16" class="ct" { (title) }
            @for (i, (label, v)) in items.iter().enumerate() {
                @let y = 26.0 + row * i as f64;
                @let w = (v / max * bar_w).clamp(0.0, bar_w);
                text x="0" y=(num(y + 13.0)) class="cl" { (label) }
                rect x=(num(label_w)) y=(num(y)) width=(num(w)) height="18" fill=(colour(i)) {}
                text x=(num(label_w + w + 6.0)) y=(num(y + 13.0)) class="cv" { (num(*v)) (unit) }
            }
        }
    }
}

/// One stacked bar per category; `series` names the stack parts.
pub fn stacked(title: &str, series: &[&str], rows: &[(String, Vec<f64>)]) -> Markup {
    let row = 26.0;
    let label_w = 170.0;
    let bar_w = 360.0;
    let h = 50.0 + row * rows.len().max(1) as f64;
    let max = rows
        .iter()
        .map(|r| r.1.iter().sum::<f64>())
        .fold(0.0, f64::max)
        .max(1e-9);
    html! {
        svg class="chart" role="img" aria-label=(title) width="600" height=(num(h)) viewBox={ "0 0 600 " (num(h)) } {
            title { (title) }
            text x="0" y="16" class="ct" { (title) }
            @for (i, (label, parts)) in rows.iter().enumerate() {
                @let y = 26.0 + row * i as f64;
                text x="0" y=(num(y + 13.0)) class="cl" { (label) }
                @for (j, (x, w, v)) in stack(label_w, parts.iter().map(|v| v / max * bar_w), parts).enumerate() {
                    @if w > 0.0 {
                        rect x=(num(x)) y=(num(y)) width=(num(w)) height="18" fill=(colour(j)) {
                            title { (series.get(j).copied().unwrap_or("")) ": " (num(v)) }
                        }
                    }
                }
                @let end = label_w + parts.iter().map(|v| v / max * bar_w).sum::<f64>();
                text x=(num(end + 6.0)) y=(num(y + 13.0)) class="cv" { (num(parts.iter().sum())) }
            }
            (legend(series, h - 12.0))
        }
    }
}

/// The parts of one stacked bar: `(x, width, value)`, each part starting where the last ended.
fn stack(
    start: f64,
    widths: impl Iterator<Item = f64>,
    values: &[f64],
) -> impl Iterator<Item = (f64, f64, f64)> {
    widths.zip(values.iter().copied()).scan(start, |x, (w, v)| {
        let at = *x;
        *x += w;
        Some((at, w, v))
    })
}

fn legend(series: &[&str], y: f64) -> Markup {
    let xs = series.iter().scan(0.0, |x, name| {
        let at = *x;
        *x += 24.0 + 7.0 * name.chars().count() as f64;
        Some(at)
    });
    html! {
        @for (j, (name, x)) in series.iter().zip(xs).enumerate() {
            rect x=(num(x)) y=(num(y - 9.0)) width="10" height="10" fill=(colour(j)) {}
            text x=(num(x + 14.0)) y=(num(y)) class="cl" { (name) }
        }
    }
}

/// A line chart over shared x labels; `None` values leave a gap.
pub fn lines(title: &str, x_labels: &[String], series: &[(&str, Vec<Option<f64>>)]) -> Markup {
    let (w, h) = (600.0, 240.0);
    let (left, right, top, bottom) = (40.0, 30.0, 28.0, 50.0);
    let plot_w = w - left - right;
    let plot_h = h - top - bottom;
    let max = series
        .iter()
        .flat_map(|s| s.1.iter().flatten())
        .copied()
        .fold(0.0, f64::max)
        .max(1.0);
    let n = x_labels.len().max(2) as f64 - 1.0;
    let x_at = |i: usize| left + plot_w * i as f64 / n;
    let y_at = |v: f64| top + plot_h - plot_h * v / max;
    // The path data of each series (numbers only): a gap starts a new sub-path.
    let path = |values: &[Option<f64>]| {
        let mut d = String::new();
        let mut pen_down = false;
        for (i, v) in values.iter().enumerate() {
            match v {
                Some(v) => {
                    let _ = write!(
                        d,
                        "{}{} {} ",
                        if pen_down { "L" } else { "M" },
                        num(x_at(i)),
                        num(y_at(*v))
                    );
                    pen_down = true;
                }
                None => pen_down = false,
            }
        }
        d.trim_end().to_owned()
    };
    let (l, r, t, b) = (num(left), num(w - right), num(top), num(top + plot_h));
    let names: Vec<&str> = series.iter().map(|s| s.0).collect();
    html! {
        svg class="chart" role="img" aria-label=(title) width=(num(w)) height=(num(h)) viewBox={ "0 0 " (num(w)) " " (num(h)) } {
            title { (title) }
            text x="0" y="16" class="ct" { (title) }
            line x1=(l) y1=(b) x2=(r) y2=(b) stroke="#999" {}
            line x1=(l) y1=(t) x2=(l) y2=(b) stroke="#999" {}
            text x=(num(left - 4.0)) y=(num(top + 4.0)) class="cl" text-anchor="end" { (num(max)) }
            text x=(num(left - 4.0)) y=(b) class="cl" text-anchor="end" { "0" }
            @for (i, label) in x_labels.iter().enumerate() {
                text x=(num(x_at(i))) y=(num(top + plot_h + 14.0)) class="cl" text-anchor="middle" { (label) }
            }
            @for (j, (name, values)) in series.iter().enumerate() {
                @for (i, v) in values.iter().enumerate() {
                    @if let Some(v) = v {
                        circle cx=(num(x_at(i))) cy=(num(y_at(*v))) r="3" fill=(colour(j)) {
                            title { (name) ": " (num(*v)) }
                        }
                    }
                }
                @let d = path(values);
                @if !d.is_empty() {
                    path d=(d) fill="none" stroke=(colour(j)) stroke-width="2" {}
                }
            }
            (legend(&names, h - 8.0))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_self_contained_svg_with_escaped_labels() {
        let b = bars(
            "Scores <1>",
            &[("a&b".into(), 50.0), ("c".into(), 100.0)],
            Some(100.0),
            "%",
        )
        .into_string();
        assert!(b.starts_with("<svg") && b.ends_with("</svg>"));
        assert!(b.contains("Scores &lt;1&gt;") && b.contains("a&amp;b"));
        assert!(
            b.contains(r#"width="180""#),
            "50 of 100 is half of 360: {b}"
        );
        let l = lines(
            "Trend",
            &["w1".into(), "w2".into(), "w3".into()],
            &[("open", vec![Some(1.0), None, Some(3.0)])],
        )
        .into_string();
        // The gap starts a new sub-path.
        assert_eq!(l.matches('M').count(), 2, "{l}");
        let s = stacked(
            "Paths",
            &["real", "synthetic"],
            &[("file".into(), vec![2.0, 1.0])],
        )
        .into_string();
        assert!(s.contains("real: 2") && s.contains(">3</text>"));
        for svg in [b, l, s] {
            assert!(!svg.contains("href") && !svg.contains("<script"));
            // Every SVG element is closed: none is left open to swallow the next.
            for e in ["rect", "line", "circle", "path", "text", "title"] {
                assert_eq!(
                    svg.matches(&format!("<{e} ")).count() + svg.matches(&format!("<{e}>")).count(),
                    svg.matches(&format!("</{e}>")).count(),
                    "{e} in {svg}"
                );
            }
        }
    }

    #[test]
    fn hostile_titles_labels_and_series_names_are_escaped() {
        let bad = r#""><script>alert(1)</script><img src=x onerror=alert(2)>"#;
        let escaped =
            "&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;";
        let charts = [
            bars(bad, &[(bad.into(), 1.0)], None, bad),
            stacked(bad, &[bad, bad], &[(bad.into(), vec![1.0, 2.0])]),
            lines(
                bad,
                &[bad.into(), bad.into()],
                &[(bad, vec![Some(1.0), Some(2.0)])],
            ),
        ];
        for c in charts {
            let c = c.into_string();
            assert!(!c.contains("<script") && !c.contains("<img"), "{c}");
            // In the aria-label attribute and as the title, label, series and unit text.
            assert!(c.contains(&format!(r#"aria-label="{escaped}""#)), "{c}");
            assert!(c.matches(escaped).count() >= 4, "{c}");
        }
    }
}
