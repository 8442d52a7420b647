//! Inline SVG charts: horizontal bars, stacked bars and line charts. No scripts, no external
//! fonts or images: the markup is part of the HTML file.

use super::html::esc;
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

/// Horizontal bars, one per `(label, value)`, scaled to `max` (or the largest value).
pub fn bars(title: &str, items: &[(String, f64)], max: Option<f64>, unit: &str) -> String {
    let row = 26.0;
    let label_w = 170.0;
    let bar_w = 360.0;
    let h = 30.0 + row * items.len().max(1) as f64;
    let max = max
        .unwrap_or_else(|| items.iter().map(|i| i.1).fold(0.0, f64::max))
        .max(1e-9);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="chart" role="img" aria-label="{t}" width="600" height="{h}" viewBox="0 0 600 {h}"><title>{t}</title>"#,
        t = esc(title),
        h = num(h)
    );
    let _ = write!(
        s,
        r##"<text x="0" y="16" class="ct">{}</text>"##,
        esc(title)
    );
    for (i, (label, v)) in items.iter().enumerate() {
        let y = 26.0 + row * i as f64;
        let w = (v / max * bar_w).clamp(0.0, bar_w);
        let _ = write!(
            s,
            r##"<text x="0" y="{ty}" class="cl">{l}</text><rect x="{x}" y="{y}" width="{w}" height="18" fill="{c}"/><text x="{vx}" y="{ty}" class="cv">{v}{u}</text>"##,
            ty = num(y + 13.0),
            l = esc(label),
            x = num(label_w),
            y = num(y),
            w = num(w),
            c = COLOURS[i % COLOURS.len()],
            vx = num(label_w + w + 6.0),
            v = num(*v),
            u = esc(unit)
        );
    }
    s.push_str("</svg>");
    s
}

/// One stacked bar per category; `series` names the stack parts.
pub fn stacked(title: &str, series: &[&str], rows: &[(String, Vec<f64>)]) -> String {
    let row = 26.0;
    let label_w = 170.0;
    let bar_w = 360.0;
    let h = 50.0 + row * rows.len().max(1) as f64;
    let max = rows
        .iter()
        .map(|r| r.1.iter().sum::<f64>())
        .fold(0.0, f64::max)
        .max(1e-9);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="chart" role="img" aria-label="{t}" width="600" height="{h}" viewBox="0 0 600 {h}"><title>{t}</title><text x="0" y="16" class="ct">{t}</text>"#,
        t = esc(title),
        h = num(h)
    );
    for (i, (label, parts)) in rows.iter().enumerate() {
        let y = 26.0 + row * i as f64;
        let _ = write!(
            s,
            r#"<text x="0" y="{}" class="cl">{}</text>"#,
            num(y + 13.0),
            esc(label)
        );
        let mut x = label_w;
        for (j, v) in parts.iter().enumerate() {
            let w = v / max * bar_w;
            if w > 0.0 {
                let _ = write!(
                    s,
                    r#"<rect x="{}" y="{}" width="{}" height="18" fill="{}"><title>{}: {}</title></rect>"#,
                    num(x),
                    num(y),
                    num(w),
                    COLOURS[j % COLOURS.len()],
                    esc(series.get(j).copied().unwrap_or("")),
                    num(*v)
                );
            }
            x += w;
        }
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" class="cv">{}</text>"#,
            num(x + 6.0),
            num(y + 13.0),
            num(parts.iter().sum())
        );
    }
    legend(&mut s, series, h - 12.0);
    s.push_str("</svg>");
    s
}

fn legend(s: &mut String, series: &[&str], y: f64) {
    let mut x = 0.0;
    for (j, name) in series.iter().enumerate() {
        let _ = write!(
            s,
            r#"<rect x="{}" y="{}" width="10" height="10" fill="{}"/><text x="{}" y="{}" class="cl">{}</text>"#,
            num(x),
            num(y - 9.0),
            COLOURS[j % COLOURS.len()],
            num(x + 14.0),
            num(y),
            esc(name)
        );
        x += 24.0 + 7.0 * name.chars().count() as f64;
    }
}

/// A line chart over shared x labels; `None` values leave a gap.
pub fn lines(title: &str, x_labels: &[String], series: &[(&str, Vec<Option<f64>>)]) -> String {
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
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="chart" role="img" aria-label="{t}" width="{w}" height="{h}" viewBox="0 0 {w} {h}"><title>{t}</title><text x="0" y="16" class="ct">{t}</text>"#,
        t = esc(title),
        w = num(w),
        h = num(h)
    );
    let _ = write!(
        s,
        r##"<line x1="{l}" y1="{b}" x2="{r}" y2="{b}" stroke="#999"/><line x1="{l}" y1="{t}" x2="{l}" y2="{b}" stroke="#999"/><text x="{tx}" y="{ty}" class="cl" text-anchor="end">{m}</text><text x="{tx}" y="{b}" class="cl" text-anchor="end">0</text>"##,
        l = num(left),
        r = num(w - right),
        t = num(top),
        b = num(top + plot_h),
        tx = num(left - 4.0),
        ty = num(top + 4.0),
        m = num(max)
    );
    for (i, label) in x_labels.iter().enumerate() {
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" class="cl" text-anchor="middle">{}</text>"#,
            num(x_at(i)),
            num(top + plot_h + 14.0),
            esc(label)
        );
    }
    for (j, (name, values)) in series.iter().enumerate() {
        let colour = COLOURS[j % COLOURS.len()];
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
                    let _ = write!(
                        s,
                        r#"<circle cx="{}" cy="{}" r="3" fill="{colour}"><title>{}: {}</title></circle>"#,
                        num(x_at(i)),
                        num(y_at(*v)),
                        esc(name),
                        num(*v)
                    );
                    pen_down = true;
                }
                None => pen_down = false,
            }
        }
        if !d.is_empty() {
            let _ = write!(
                s,
                r#"<path d="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
                d.trim_end()
            );
        }
    }
    let names: Vec<&str> = series.iter().map(|s| s.0).collect();
    legend(&mut s, &names, h - 8.0);
    s.push_str("</svg>");
    s
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
        );
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
        );
        // The gap starts a new sub-path.
        assert_eq!(l.matches('M').count(), 2, "{l}");
        let s = stacked(
            "Paths",
            &["real", "synthetic"],
            &[("file".into(), vec![2.0, 1.0])],
        );
        assert!(s.contains("real: 2") && s.contains(">3</text>"));
        for svg in [b, l, s] {
            assert!(!svg.contains("href") && !svg.contains("<script"));
        }
    }
}
