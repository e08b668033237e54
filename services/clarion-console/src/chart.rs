//! Charts as inline SVG, drawn on the server: the console's CSP allows no
//! inline script and no chart library is loaded, and an SVG made here is
//! plain markup that prints, zooms and works without JavaScript. Each
//! chart has a `<title>` and `<desc>` for screen readers, and the page
//! shows the same figures in a table beside it.
//!
//! Colours are presentation attributes (not `style`), which the CSP's
//! `style-src 'self'` permits.

use std::fmt::Write;

const W: f64 = 720.0;
const H: f64 = 220.0;
const LEFT: f64 = 48.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;

/// Colours with enough contrast on white, told apart by dashes too.
const COLOURS: [(&str, &str); 4] = [
    ("#1d4ed8", ""),
    ("#15803d", "6 3"),
    ("#b91c1c", "2 3"),
    ("#7e22ce", "10 4"),
];

/// One line of a chart.
pub struct Line<'a> {
    pub name: &'a str,
    pub values: Vec<f64>,
}

/// Text safe inside SVG markup.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The smallest of 1, 2, 5 × 10ⁿ at or over `max` (an axis' top).
pub fn nice_max(max: f64) -> f64 {
    if max <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|v| *v >= max)
        .unwrap_or(10.0 * p)
}

fn fmt_num(v: f64) -> String {
    if v >= 1_000_000.0 {
        format!("{:.1}M", v / 1_000_000.0)
    } else if v >= 10_000.0 {
        format!("{:.0}k", v / 1_000.0)
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn open(out: &mut String, id: &str, title: &str, desc: &str) {
    let _ = write!(
        out,
        r#"<svg id="{id}" class="chart" viewBox="0 0 {W} {H}" width="100%" role="img" aria-labelledby="{id}-title {id}-desc" xmlns="http://www.w3.org/2000/svg"><title id="{id}-title">{}</title><desc id="{id}-desc">{}</desc>"#,
        escape(title),
        escape(desc)
    );
}

/// The y axis: gridlines and labels at 0, ½ and the top.
fn y_axis(out: &mut String, top: f64) {
    for f in [0.0, 0.5, 1.0] {
        let y = H - BOTTOM - f * (H - TOP - BOTTOM);
        let _ = write!(
            out,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#d1d5db" stroke-width="1"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end" fill="#374151">{}</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            fmt_num(f * top)
        );
    }
}

/// Labels under the x axis: the first, middle and last of `labels`.
fn x_labels(out: &mut String, labels: &[String], x_of: impl Fn(usize) -> f64) {
    let n = labels.len();
    if n == 0 {
        return;
    }
    let mut picks = vec![0, n / 2, n - 1];
    picks.dedup();
    for (k, i) in picks.into_iter().enumerate() {
        let anchor = match k {
            0 => "start",
            _ if i == n - 1 => "end",
            _ => "middle",
        };
        let _ = write!(
            out,
            r##"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="{anchor}" fill="#374151">{}</text>"##,
            x_of(i),
            H - 8.0,
            escape(&labels[i])
        );
    }
}

/// A line chart of `lines` over the points labelled `labels` (same length),
/// with a legend.
pub fn lines(id: &str, title: &str, labels: &[String], lines: &[Line]) -> String {
    let n = labels.len().max(1);
    let top = nice_max(
        lines
            .iter()
            .flat_map(|l| l.values.iter().copied())
            .fold(0.0, f64::max),
    );
    let x_of = |i: usize| {
        if n == 1 {
            LEFT + (W - LEFT - RIGHT) / 2.0
        } else {
            LEFT + i as f64 * (W - LEFT - RIGHT) / (n - 1) as f64
        }
    };
    let y_of = |v: f64| H - BOTTOM - v / top * (H - TOP - BOTTOM);
    let legend: Vec<String> = lines
        .iter()
        .map(|l| format!("{}: {}", l.name, fmt_num(l.values.iter().sum())))
        .collect();
    let mut out = String::new();
    open(
        &mut out,
        id,
        title,
        &format!(
            "{} points from {} to {}. Totals: {}.",
            labels.len(),
            labels.first().map_or("", String::as_str),
            labels.last().map_or("", String::as_str),
            legend.join(", ")
        ),
    );
    y_axis(&mut out, top);
    for (k, l) in lines.iter().enumerate() {
        let (colour, dash) = COLOURS[k % COLOURS.len()];
        let points: Vec<String> = l
            .values
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", x_of(i), y_of(*v)))
            .collect();
        let _ = write!(
            out,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" stroke-dasharray="{dash}" points="{}"><title>{}</title></polyline>"#,
            points.join(" "),
            escape(l.name)
        );
        let lx = LEFT + 8.0 + k as f64 * 150.0;
        let _ = write!(
            out,
            r#"<line x1="{lx:.1}" y1="{TOP}" x2="{:.1}" y2="{TOP}" stroke="{colour}" stroke-width="3" stroke-dasharray="{dash}"/><text x="{:.1}" y="{:.1}" font-size="11" fill="{colour}">{}</text>"#,
            lx + 18.0,
            lx + 22.0,
            TOP + 4.0,
            escape(&legend[k])
        );
    }
    x_labels(&mut out, labels, x_of);
    out.push_str("</svg>");
    out
}

/// A bar chart: one bar per (label, value).
pub fn bars(id: &str, title: &str, bars: &[(String, f64)]) -> String {
    let n = bars.len().max(1);
    let top = nice_max(bars.iter().map(|b| b.1).fold(0.0, f64::max));
    let slot = (W - LEFT - RIGHT) / n as f64;
    let x_of = |i: usize| LEFT + slot * (i as f64 + 0.5);
    let desc: Vec<String> = bars
        .iter()
        .map(|(l, v)| format!("{l}: {}", fmt_num(*v)))
        .collect();
    let mut out = String::new();
    open(&mut out, id, title, &desc.join(", "));
    y_axis(&mut out, top);
    for (i, (label, v)) in bars.iter().enumerate() {
        let h = v / top * (H - TOP - BOTTOM);
        let _ = write!(
            out,
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="#1d4ed8"><title>{}: {}</title></rect>"##,
            x_of(i) - slot * 0.35,
            H - BOTTOM - h,
            slot * 0.7,
            escape(label),
            fmt_num(*v)
        );
    }
    let labels: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
    x_labels(&mut out, &labels, x_of);
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_round_up_and_text_is_escaped() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(7.0), 10.0);
        assert_eq!(nice_max(13.0), 20.0);
        assert_eq!(nice_max(0.3), 0.5);
        let svg = lines(
            "c",
            "Sends <b>",
            &["10:00".into(), "10:01".into()],
            &[Line {
                name: "sent",
                values: vec![3.0, 1.0],
            }],
        );
        assert!(svg.starts_with("<svg id=\"c\""));
        assert!(svg.contains("Sends &lt;b&gt;"));
        assert!(svg.contains("sent: 4"));
        assert!(!svg.contains("<b>"));
        let svg = bars("h", "Latency", &[("≤5 ms".into(), 2.0)]);
        assert!(svg.contains("<rect"));
    }
}
