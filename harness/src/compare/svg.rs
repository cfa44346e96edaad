//! A dependency-free SVG chart of throughput and p99 latency against threads, log-scaled
//! axes (threads go 1, 4, 16, 64; throughputs span decades). A strategy keeps one colour;
//! the setting (`synchronous`, processes) is the line's dash pattern, so a run of a dozen
//! strategies in four settings stays readable.

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
const COLORS: [&str; 14] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#000000", "#aec7e8", "#98df8a", "#ff9896",
];
const DASHES: [&str; 6] = ["", "8 4", "2 3", "8 3 2 3", "1 1", "12 2"];

/// One line: a strategy (its colour) in one setting (its dash pattern).
#[derive(Clone, Debug)]
pub struct Series {
    /// The strategy; one colour per strategy.
    pub strategy: String,
    /// The setting (`"sync=normal"`, `"sync=full, 4 procs"`); one dash pattern each.
    pub setting: String,
    /// Its points.
    pub points: Vec<Point>,
}

/// Renders two panels side by side (throughput, p99) with a legend of strategies
/// (colours) and settings (dash patterns).
pub fn chart(title: &str, series: &[Series]) -> String {
    let strategies: Vec<&str> = dedup(series.iter().map(|s| s.strategy.as_str()));
    let settings: Vec<&str> = dedup(series.iter().map(|s| s.setting.as_str()));
    let color = |s: &Series| {
        let i = strategies
            .iter()
            .position(|x| *x == s.strategy)
            .unwrap_or(0);
        COLORS[i % COLORS.len()]
    };
    let dash = |s: &Series| {
        let i = settings.iter().position(|x| *x == s.setting).unwrap_or(0);
        DASHES[i % DASHES.len()]
    };
    let mut out = String::new();
    let legend_rows = strategies.len().max(settings.len());
    let legend_h = 18.0 * legend_rows as f64 + 10.0;
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
    panel(
        &mut out,
        0.0,
        20.0,
        "throughput (ops/s)",
        series,
        &color,
        &dash,
        |p| p.ops_per_sec,
    );
    panel(
        &mut out,
        W + 20.0,
        20.0,
        "p99 latency (µs)",
        series,
        &color,
        &dash,
        |p| p.p99_us,
    );
    for (i, strategy) in strategies.iter().enumerate() {
        let y = H + 40.0 + 18.0 * i as f64;
        let unsafe_mark = if series
            .iter()
            .any(|s| s.strategy == *strategy && s.points.iter().any(|p| !p.safe))
        {
            " (UNSAFE: a checker failed)"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            r#"<line x1="{PAD_L}" y1="{y}" x2="{}" y2="{y}" stroke="{}" stroke-width="3"/><text x="{}" y="{}">{}{}</text>"#,
            PAD_L + 24.0,
            COLORS[i % COLORS.len()],
            PAD_L + 30.0,
            y + 4.0,
            escape(strategy),
            unsafe_mark
        );
    }
    for (i, setting) in settings.iter().enumerate() {
        let y = H + 40.0 + 18.0 * i as f64;
        let x = W + 20.0 + PAD_L;
        let _ = writeln!(
            out,
            r##"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="#333" stroke-width="2" stroke-dasharray="{}"/><text x="{}" y="{}">{}</text>"##,
            x + 36.0,
            DASHES[i % DASHES.len()],
            x + 42.0,
            y + 4.0,
            escape(setting)
        );
    }
    out.push_str("</svg>\n");
    out
}

fn dedup<'a>(items: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen = Vec::new();
    for item in items {
        if !seen.contains(&item) {
            seen.push(item);
        }
    }
    seen
}

#[allow(clippy::too_many_arguments)] // One call site per panel; a struct would only rename them.
fn panel<'s>(
    out: &mut String,
    x0: f64,
    y0: f64,
    ylabel: &str,
    series: &'s [Series],
    color: &dyn Fn(&Series) -> &'static str,
    dash: &dyn Fn(&Series) -> &'static str,
    value: impl Fn(&Point) -> f64,
) {
    let points = series.iter().flat_map(|s| &s.points);
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
    let mut ticks: Vec<u32> = series
        .iter()
        .flat_map(|s| &s.points)
        .map(|p| p.threads)
        .collect();
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
    for line in series {
        let mut path = String::new();
        for p in line.points.iter().filter(|p| value(p) > 0.0) {
            let cmd = if path.is_empty() { 'M' } else { 'L' };
            let _ = write!(
                path,
                "{cmd}{:.1},{:.1} ",
                sx(f64::from(p.threads)),
                sy(value(p))
            );
        }
        if !path.is_empty() {
            let _ = writeln!(
                out,
                r#"<path d="{path}" fill="none" stroke="{}" stroke-width="2" stroke-dasharray="{}"/>"#,
                color(line),
                dash(line)
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

/// `s` as XML text: markup escaped, and what XML 1.0 does not allow in a document at all
/// (control characters, even as references; U+FFFE, U+FFFF) written as Rust escapes
/// (`\u{1b}`), as the CLI prints them.
fn escape(s: &str) -> String {
    crate::report::printable(s)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\u{fffe}', "\\u{fffe}")
        .replace('\u{ffff}', "\\u{ffff}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_series_and_marks_unsafe_ones() {
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
        let line = |strategy: &str, setting: &str, safe| Series {
            strategy: strategy.into(),
            setting: setting.into(),
            points: pts(safe),
        };
        let series = [
            line("queue", "sync=normal", true),
            line("queue", "sync=full", true),
            line("unserialized <x>", "sync=normal", false),
        ];
        let svg = chart("insert", &series);
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(
            svg.matches(">queue<").count(),
            1,
            "one legend entry per strategy"
        );
        assert!(svg.contains("unserialized &lt;x&gt; (UNSAFE"));
        assert!(svg.contains(">sync=full<"));
        // Three series in each of two panels.
        assert_eq!(svg.matches("<path").count(), 6);
    }
}
