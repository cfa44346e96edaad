//! A dependency-free SVG chart of throughput and p99 latency against threads, one line
//! per strategy, log-scaled axes (threads go 1, 4, 16, 64; throughputs span decades).

use std::collections::BTreeMap;
use std::fmt::Write;

/// One point of a series.
#[derive(Clone, Copy, Debug)]
pub struct Point {
    /// Threads (x).
    pub threads: u32,
    /// Ops per second.
    pub ops_per_sec: f64,
    /// p99 latency in µs.
    pub p99_us: f64,
    /// Whether every checker passed on that run.
    pub safe: bool,
}

const W: f64 = 440.0;
const H: f64 = 300.0;
const PAD_L: f64 = 70.0;
const PAD_B: f64 = 40.0;
const PAD_T: f64 = 30.0;
const PAD_R: f64 = 20.0;
const COLORS: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

/// Renders two panels side by side (throughput, p99) with a legend. `series` maps a label
/// (strategy, processes) to its points.
pub fn chart(title: &str, series: &BTreeMap<String, Vec<Point>>) -> String {
    let mut out = String::new();
    let legend_h = 18.0 * series.len() as f64 + 10.0;
    let total_w = 2.0 * W + 20.0;
    let total_h = H + legend_h + 30.0;
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{total_w}" height="{total_h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        out,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{}" y="18" font-size="15" text-anchor="middle">{}</text>"#,
        total_w / 2.0,
        escape(title)
    );
    panel(&mut out, 0.0, 20.0, "throughput (ops/s)", series, |p| {
        p.ops_per_sec
    });
    panel(&mut out, W + 20.0, 20.0, "p99 latency (µs)", series, |p| {
        p.p99_us
    });
    for (i, (label, points)) in series.iter().enumerate() {
        let y = H + 40.0 + 18.0 * i as f64;
        let color = COLORS[i % COLORS.len()];
        let unsafe_mark = if points.iter().any(|p| !p.safe) {
            " (UNSAFE: a checker failed)"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            r#"<line x1="{PAD_L}" y1="{y}" x2="{}" y2="{y}" stroke="{color}" stroke-width="3"/><text x="{}" y="{}">{}{}</text>"#,
            PAD_L + 24.0,
            PAD_L + 30.0,
            y + 4.0,
            escape(label),
            unsafe_mark
        );
    }
    out.push_str("</svg>\n");
    out
}

fn panel(
    out: &mut String,
    x0: f64,
    y0: f64,
    ylabel: &str,
    series: &BTreeMap<String, Vec<Point>>,
    value: impl Fn(&Point) -> f64,
) {
    let points = series.values().flatten();
    let (mut xmin, mut xmax, mut ymin, mut ymax) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for p in points {
        let v = value(p);
        if v > 0.0 {
            xmin = xmin.min(f64::from(p.threads));
            xmax = xmax.max(f64::from(p.threads));
            ymin = ymin.min(v);
            ymax = ymax.max(v);
        }
    }
    if xmin > xmax {
        return;
    }
    // Whole decades on y, so the axis labels are round numbers.
    let (ylo, yhi) = (
        ymin.log10().floor(),
        ymax.log10().ceil().max(ymin.log10().floor() + 1.0),
    );
    let (xlo, xhi) = (xmin.log2(), xmax.log2().max(xmin.log2() + 1.0));
    let pw = W - PAD_L - PAD_R;
    let ph = H - PAD_T - PAD_B;
    let sx = |t: f64| x0 + PAD_L + (t.log2() - xlo) / (xhi - xlo) * pw;
    let sy = |v: f64| y0 + PAD_T + ph - (v.log10() - ylo) / (yhi - ylo) * ph;
    let _ = writeln!(
        out,
        r##"<rect x="{}" y="{}" width="{pw}" height="{ph}" fill="none" stroke="#999"/><text x="{}" y="{}" text-anchor="middle">{}</text><text x="{}" y="{}" text-anchor="middle">threads</text>"##,
        x0 + PAD_L,
        y0 + PAD_T,
        x0 + PAD_L + pw / 2.0,
        y0 + PAD_T - 8.0,
        escape(ylabel),
        x0 + PAD_L + pw / 2.0,
        y0 + H - 8.0
    );
    let mut decade = ylo;
    while decade <= yhi {
        let v = 10f64.powf(decade);
        let _ = writeln!(
            out,
            r##"<line x1="{}" y1="{y}" x2="{}" y2="{y}" stroke="#eee"/><text x="{}" y="{}" text-anchor="end">{}</text>"##,
            x0 + PAD_L,
            x0 + PAD_L + pw,
            x0 + PAD_L - 4.0,
            sy(v) + 4.0,
            human(v),
            y = sy(v)
        );
        decade += 1.0;
    }
    let mut ticks: Vec<u32> = series.values().flatten().map(|p| p.threads).collect();
    ticks.sort_unstable();
    ticks.dedup();
    for t in ticks {
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle">{t}</text>"#,
            sx(f64::from(t)),
            y0 + PAD_T + ph + 14.0
        );
    }
    for (i, points) in series.values().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let mut path = String::new();
        for p in points.iter().filter(|p| value(p) > 0.0) {
            let cmd = if path.is_empty() { 'M' } else { 'L' };
            let _ = write!(
                path,
                "{cmd}{:.1},{:.1} ",
                sx(f64::from(p.threads)),
                sy(value(p))
            );
        }
        if !path.is_empty() {
            let dash = if points.iter().any(|p| !p.safe) {
                r#" stroke-dasharray="4 3""#
            } else {
                ""
            };
            let _ = writeln!(
                out,
                r#"<path d="{path}" fill="none" stroke="{color}" stroke-width="2"{dash}/>"#
            );
        }
    }
}

fn human(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{}k", v / 1e3)
    } else {
        format!("{v}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_series_and_marks_unsafe_ones() {
        let mut series = BTreeMap::new();
        let pts = |safe| {
            [1, 4, 16]
                .iter()
                .map(|&t| Point {
                    threads: t,
                    ops_per_sec: 1000.0 * f64::from(t),
                    p99_us: 50.0 * f64::from(t),
                    safe,
                })
                .collect::<Vec<_>>()
        };
        series.insert("queue".to_owned(), pts(true));
        series.insert("unserialized <x>".to_owned(), pts(false));
        let svg = chart("insert", &series);
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("queue"));
        assert!(svg.contains("unserialized &lt;x&gt; (UNSAFE"));
        assert_eq!(svg.matches("<path").count(), 4);
    }
}
