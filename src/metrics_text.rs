//! The Prometheus text exposition format (version 0.0.4), written by hand: `# HELP` and
//! `# TYPE` lines per family, then its samples with escaped label values. The one writer of
//! `/metrics` text, whoever owns the counters (the API's device and telemetry metrics, the
//! MQTT client's, the work-order store's).

use std::fmt::{Display, Write as _};

/// A metric family's type, as `# TYPE` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Exposition text being written.
#[derive(Debug, Default)]
pub struct MetricsText {
    out: String,
}

impl MetricsText {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_capacity(bytes: usize) -> Self {
        MetricsText {
            out: String::with_capacity(bytes),
        }
    }

    /// Starts a family: its `# HELP` and `# TYPE` lines. `help` is written as given (keep it
    /// to one line without backslashes).
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.as_str());
    }

    /// One sample: `name{label="value",...} value`, without braces when there are no labels.
    /// Label values are escaped here (pass them as they are).
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (label, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(label);
                self.out.push_str("=\"");
                escape_label_into(&mut self.out, v);
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// A family of one sample without labels.
    pub fn scalar(&mut self, name: &str, kind: Kind, help: &str, value: impl Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// A family with one label: a sample per (label value, value).
    pub fn labelled(
        &mut self,
        name: &str,
        kind: Kind,
        help: &str,
        label: &str,
        rows: &[(&str, impl Display)],
    ) {
        self.family(name, kind, help);
        for (value, v) in rows {
            self.sample(name, &[(label, value)], v);
        }
    }

    /// Appends text written by another `MetricsText`.
    pub fn push_text(&mut self, text: &str) {
        self.out.push_str(text);
    }

    pub fn as_str(&self) -> &str {
        &self.out
    }

    pub fn into_string(self) -> String {
        self.out
    }
}

/// A label value as the format writes it between quotes: `\` as `\\`, `"` as `\"`, a line
/// feed as `\n`.
fn escape_label_into(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_families_and_samples() {
        let mut t = MetricsText::new();
        t.family("x_total", Kind::Counter, "Things counted.");
        t.sample("x_total", &[], 3);
        t.sample("x_total", &[("asset", "P-1"), ("kind", "timeout")], 0.5);
        t.scalar("y", Kind::Gauge, "A level.", 1u8);
        t.labelled(
            "z",
            Kind::Counter,
            "By cause.",
            "cause",
            &[("a", 1), ("b", 2)],
        );
        assert_eq!(
            t.as_str(),
            "# HELP x_total Things counted.\n# TYPE x_total counter\nx_total 3\n\
             x_total{asset=\"P-1\",kind=\"timeout\"} 0.5\n\
             # HELP y A level.\n# TYPE y gauge\ny 1\n\
             # HELP z By cause.\n# TYPE z counter\nz{cause=\"a\"} 1\nz{cause=\"b\"} 2\n"
        );
    }

    #[test]
    fn escapes_backslash_quote_and_newline_in_label_values() {
        let mut t = MetricsText::new();
        t.sample("m", &[("path", "C:\\dev\\\"tty\"\nx")], 1);
        assert_eq!(
            t.into_string(),
            "m{path=\"C:\\\\dev\\\\\\\"tty\\\"\\nx\"} 1\n"
        );
    }
}
