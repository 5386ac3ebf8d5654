//! Timelines: what every stream ran, when, and which record each wait waited for.
//!
//! Owns the process-wide recording switch, the span buffer the stream workers append to while
//! it is on, [`record`] (the library API), [`Timeline`] and its exports: a Chrome trace
//! (Perfetto-readable, one track per stream, a flow arrow from each record to the waits bound
//! to it) and a self-contained SVG (one lane per stream, op boxes labelled, events as arrows).
//! It never decides anything about execution; workers only report to it.
//!
//! *Fast path*: while recording is off, a worker pays one relaxed atomic load per entry (and per
//! replay instruction); `benches/runtime.rs` prints the replay cost per op with recording off.
//!
//! ```
//! use tagstream::{trace, DType, Tensor};
//! let x = Tensor::full(&[4, 4], 1.0, DType::F32)?;
//! let (y, timeline) = trace::record(|| x.matmul(&x))?;
//! assert_eq!(y.to_vec_f32()?[0], 4.0);
//! assert!(timeline.spans().iter().any(|s| s.name == "matmul" && s.stream == "default"));
//! assert!(timeline.to_chrome_json().contains("\"traceEvents\""));
//! assert!(timeline.to_svg().starts_with("<svg"));
//! # Ok::<(), tagstream::Error>(())
//! ```

pub(crate) mod spans;

use std::cell::Cell;
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

pub use self::spans::SpanKind;
use self::spans::{Label, RawSpan, buffer, set_recording};
use crate::dispatch;
use crate::error::Result;

/// One entry as a stream ran it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    /// The stream's tag.
    pub stream: String,
    /// `matmul`, `copy_in`, `record("66")`, `wait(fork)`, ...
    pub name: String,
    /// What the entry is.
    pub kind: SpanKind,
    /// Start, in nanoseconds since the process's first recorded span.
    pub start_ns: u64,
    /// End, in nanoseconds (equal to `start_ns` for an instant).
    pub end_ns: u64,
    /// The entry's position on its stream (`k` of R3.4).
    pub position: u64,
    /// For a wait: the stream tag and position of the entry it waited for.
    pub waits_for: Option<(String, u64)>,
}

/// One recording at a time (a second `record` call waits for the first).
/// One recording at a time (a second `record` call waits for the first).
static SESSION: Mutex<()> = Mutex::new(());

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Records a timeline of everything the streams run while `f` executes, up to the end of the
/// work `f` issued (the call ends with a [`synchronize`](crate::synchronize)).
///
/// Use it around a `Compiled::run` to see one replay, or around any eager code. Recording is
/// process-wide: work other threads issue meanwhile appears too. Calls are serialised; a call
/// nested in the same thread's recording records nothing of its own (its work is in the outer
/// timeline) and returns an empty timeline. If `f` panics, recording stops and the panic goes
/// on.
///
/// # Errors
/// Whatever `f` returns, or the error of the final `synchronize` (recording stops either way).
pub fn record<R>(f: impl FnOnce() -> Result<R>) -> Result<(R, Timeline)> {
    thread_local! {
        static INSIDE: Cell<bool> = const { Cell::new(false) };
    }
    // `try_with`: a call from a late thread-local destructor is treated as not nested.
    if INSIDE.try_with(Cell::get).unwrap_or(false) {
        // Nested in this thread's own recording: the outer timeline gets everything (taking
        // the session lock again would deadlock).
        return f().map(|r| (r, Timeline::default()));
    }
    let _session = SESSION.lock().unwrap_or_else(|p| p.into_inner());
    let _ = INSIDE.try_with(|i| i.set(true));
    struct Leave;
    impl Drop for Leave {
        fn drop(&mut self) {
            let _ = INSIDE.try_with(|i| i.set(false));
            set_recording(false);
        }
    }
    let _leave = Leave;
    let start = epoch();
    dispatch::synchronize()?; // earlier work is not part of this timeline
    buffer().clear();
    set_recording(true);
    let out = f().and_then(|r| dispatch::synchronize().map(|()| r));
    set_recording(false);
    let raw = std::mem::take(&mut *buffer());
    let out = out?;
    Ok((out, Timeline::from_raw(raw, start)))
}

/// The spans of one recording, ordered by start time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Timeline {
    spans: Vec<Span>,
}

fn name_of(kind: SpanKind, label: &Label) -> String {
    let l = match label {
        Label::Static(s) => s.to_string(),
        Label::Tag(t) => format!("{t:?}"),
    };
    match kind {
        SpanKind::Op | SpanKind::CopyIn => l,
        SpanKind::Record => format!("record({l})"),
        SpanKind::Wait => format!("wait({l})"),
    }
}

impl Timeline {
    fn from_raw(raw: Vec<RawSpan>, epoch: Instant) -> Timeline {
        let ns = |t: Instant| {
            u64::try_from(t.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
        };
        let mut spans: Vec<Span> = raw
            .into_iter()
            .map(|r| Span {
                stream: r.stream.to_string(),
                name: name_of(r.kind, &r.label),
                kind: r.kind,
                start_ns: ns(r.start),
                end_ns: ns(r.end),
                position: r.position,
                waits_for: r.waits_for.map(|(s, k)| (s.to_string(), k)),
            })
            .collect();
        spans.sort_by_key(|s| (s.start_ns, s.end_ns));
        Timeline { spans }
    }

    /// Every span, by start time.
    pub fn spans(&self) -> &[Span] {
        &self.spans
    }

    /// The streams that ran something, in order of their first span (main first if present).
    pub fn streams(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        if self.spans.iter().any(|s| s.stream == "default") {
            out.push("default".into());
        }
        for s in &self.spans {
            if !out.contains(&s.stream) {
                out.push(s.stream.clone());
            }
        }
        out
    }

    /// `(from, to)` span indices: from the entry a wait was bound to (a record, or for an eager
    /// compiled run's fork the main stream's last entry before the call) to the wait.
    pub fn arrows(&self) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for (w, span) in self.spans.iter().enumerate() {
            if let Some((stream, pos)) = &span.waits_for
                && let Some(r) = self
                    .spans
                    .iter()
                    .position(|s| &s.stream == stream && s.position == *pos)
            {
                out.push((r, w));
            }
        }
        out
    }

    /// A Chrome trace (open in Perfetto or `chrome://tracing`) of this timeline alone.
    pub fn to_chrome_json(&self) -> String {
        chrome_json(&[("tagstream", self)])
    }

    /// A self-contained SVG picture of this timeline alone.
    pub fn to_svg(&self) -> String {
        svg(&[("tagstream", self)])
    }
}

/// A Chrome trace with one process per `(title, timeline)`, one thread track per stream, and
/// a flow arrow from each record to each wait bound to it.
pub fn chrome_json(runs: &[(&str, &Timeline)]) -> String {
    let mut events = Vec::new();
    let mut flow = 0u64;
    for (pid, (title, t)) in runs.iter().enumerate() {
        let pid = pid + 1;
        let origin = t.spans.first().map_or(0, |s| s.start_ns);
        let us = |ns: u64| (ns - origin) as f64 / 1e3;
        let streams = t.streams();
        let tid = |s: &str| streams.iter().position(|x| x == s).unwrap_or(0) + 1;
        events.push(serde_json::json!({
            "name": "process_name", "ph": "M", "pid": pid, "args": { "name": title }
        }));
        for s in &streams {
            events.push(serde_json::json!({
                "name": "thread_name", "ph": "M", "pid": pid, "tid": tid(s),
                "args": { "name": format!("stream {s:?}") }
            }));
        }
        for s in &t.spans {
            events.push(serde_json::json!({
                "name": s.name, "cat": format!("{:?}", s.kind).to_lowercase(), "ph": "X",
                "pid": pid, "tid": tid(&s.stream), "ts": us(s.start_ns),
                "dur": us(s.end_ns) - us(s.start_ns),
                "args": { "position": s.position }
            }));
        }
        for (r, w) in t.arrows() {
            let (r, w) = (&t.spans[r], &t.spans[w]);
            flow += 1;
            events.push(serde_json::json!({
                "name": "event", "cat": "event", "ph": "s", "id": flow,
                "pid": pid, "tid": tid(&r.stream), "ts": us(r.end_ns)
            }));
            events.push(serde_json::json!({
                "name": "event", "cat": "event", "ph": "f", "bp": "e", "id": flow,
                "pid": pid, "tid": tid(&w.stream), "ts": us(w.start_ns.max(r.end_ns))
            }));
        }
    }
    serde_json::json!({ "traceEvents": events, "displayTimeUnit": "ns" }).to_string()
}

/// `s` as XML 1.0 text or attribute value: the five markup characters as entities, and every
/// control character as a visible Rust escape (`\0`, `\n`, `\u{1b}`), as are U+FFFE and U+FFFF.
/// XML 1.0 cannot hold NUL and most C0 controls at all, not even as character references, and
/// the rest (tab, newlines, DEL, C1) would be invisible or normalised away.
fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() || c == '\u{FFFE}' || c == '\u{FFFF}' => {
                out.extend(c.escape_debug())
            }
            c => out.push(c),
        }
    }
    out
}

/// An SVG with one panel per `(title, timeline)`: a lane per stream, a box per span (ops
/// blue, copy-ins grey, waits orange, records as green ticks), and an arrow from each record to
/// each wait bound to it. Each panel's time axis starts at its first span; all panels share
/// one scale (the longest panel's), so a shorter run is drawn shorter (before and after
/// pictures compare by eye).
pub fn svg(runs: &[(&str, &Timeline)]) -> String {
    const W: f64 = 1200.0;
    const LEFT: f64 = 150.0;
    const LANE: f64 = 34.0;
    const HEAD: f64 = 46.0;
    let mut body = String::new();
    let mut y0 = 10.0;
    let duration = |t: &Timeline| {
        let origin = t.spans.first().map_or(0, |s| s.start_ns);
        let end = t.spans.iter().map(|s| s.end_ns).max().unwrap_or(origin);
        (end - origin).max(1) as f64
    };
    let scale = runs.iter().map(|(_, t)| duration(t)).fold(1.0, f64::max);
    for (title, t) in runs {
        let streams = t.streams();
        let origin = t.spans.first().map_or(0, |s| s.start_ns);
        let total = duration(t);
        let x = |ns: u64| LEFT + (ns - origin) as f64 / scale * (W - LEFT - 20.0);
        let lane_y =
            |s: &str| y0 + HEAD + streams.iter().position(|x| x == s).unwrap_or(0) as f64 * LANE;
        let _ = writeln!(
            body,
            r#"<text x="10" y="{:.1}" font-size="15" font-weight="bold">{} — {:.3} ms</text>"#,
            y0 + 18.0,
            xml(title),
            total / 1e6
        );
        for tick in 0..=4 {
            let tx = LEFT + f64::from(tick) / 4.0 * (W - LEFT - 20.0);
            let anchor = if tick == 4 { "end" } else { "middle" };
            let _ = writeln!(
                body,
                r##"<line x1="{tx:.1}" y1="{:.1}" x2="{tx:.1}" y2="{:.1}" stroke="#ddd"/><text x="{tx:.1}" y="{:.1}" font-size="10" text-anchor="{anchor}" fill="#666">{:.3} ms</text>"##,
                y0 + HEAD - 6.0,
                y0 + HEAD + streams.len() as f64 * LANE,
                y0 + HEAD - 9.0,
                scale / 1e6 * f64::from(tick) / 4.0
            );
        }
        for s in &streams {
            let ly = lane_y(s);
            let _ = writeln!(
                body,
                r##"<rect x="0" y="{ly:.1}" width="{W}" height="{:.1}" fill="#f6f6f6" stroke="#fff"/><text x="8" y="{:.1}" font-size="12">stream {}</text>"##,
                LANE - 2.0,
                ly + LANE / 2.0 + 4.0,
                xml(&format!("{s:?}"))
            );
        }
        for s in &t.spans {
            let (x0, x1) = (x(s.start_ns), x(s.end_ns));
            let ly = lane_y(&s.stream);
            let (fill, h) = match s.kind {
                SpanKind::Op => ("#4e79a7", LANE - 10.0),
                SpanKind::CopyIn => ("#9a9a9a", LANE - 10.0),
                SpanKind::Wait => ("#f28e2b", LANE - 20.0),
                SpanKind::Record => ("#59a14f", LANE - 6.0),
            };
            let w = (x1 - x0).max(if s.kind == SpanKind::Record { 2.0 } else { 1.0 });
            let top = ly + (LANE - 2.0 - h) / 2.0;
            let _ = write!(
                body,
                r#"<rect x="{x0:.1}" y="{top:.1}" width="{w:.1}" height="{h:.1}" fill="{fill}"><title>{} on {} at {}: {:.1} µs</title></rect>"#,
                xml(&s.name),
                // Quoted like the lane labels, so a tag reads the same (and unambiguously) there.
                xml(&format!("{:?}", s.stream)),
                s.position,
                (s.end_ns - s.start_ns) as f64 / 1e3
            );
            if s.kind == SpanKind::Op && w > 7.0 * s.name.len() as f64 {
                let _ = write!(
                    body,
                    r#"<text x="{:.1}" y="{:.1}" font-size="11" fill="white" text-anchor="middle">{}</text>"#,
                    x0 + w / 2.0,
                    ly + LANE / 2.0 + 3.0,
                    xml(&s.name)
                );
            }
            body.push('\n');
        }
        for (r, w) in t.arrows() {
            let (r, w) = (&t.spans[r], &t.spans[w]);
            let _ = writeln!(
                body,
                r##"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#e15759" stroke-width="1.5" marker-end="url(#arrow)"><title>{} → {}</title></line>"##,
                x(r.end_ns),
                lane_y(&r.stream) + LANE / 2.0,
                x(w.start_ns.max(r.end_ns)),
                lane_y(&w.stream) + LANE / 2.0,
                xml(&r.name),
                xml(&w.name)
            );
        }
        y0 += HEAD + streams.len() as f64 * LANE + 24.0;
    }
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{y0:.0}" viewBox="0 0 {W} {y0:.0}" font-family="sans-serif">
<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#e15759"/></marker></defs>
<rect width="100%" height="100%" fill="white"/>
{body}<text x="{:.0}" y="{:.0}" font-size="10" fill="#666" text-anchor="end">blue: op, grey: copy-in, orange: wait, green: record, red arrow: record → wait</text>
</svg>
"##,
        W - 10.0,
        y0 - 6.0
    )
}

#[cfg(test)]
mod tests {
    use super::xml;

    #[test]
    fn xml_escapes_markup_and_makes_controls_visible() {
        assert_eq!(xml("a&b<c>d\"e'f"), "a&amp;b&lt;c&gt;d&quot;e&apos;f");
        assert_eq!(xml("n\0l"), "n\\0l");
        assert_eq!(
            xml("\t\n\r\u{1b}\u{7f}\u{85}\u{FFFE}\u{FFFF}"),
            "\\t\\n\\r\\u{1b}\\u{7f}\\u{85}\\u{fffe}\\u{ffff}"
        );
        assert_eq!(
            xml("ünï 流 🦀 \\0"),
            "ünï 流 🦀 \\0",
            "printable text is kept"
        );
    }
}
