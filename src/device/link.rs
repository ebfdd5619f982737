//! Link URLs: the physical connection a poller owns (`tcp://`, `rtu+tcp://`, `rtu://`).

use std::fmt;
use std::time::Duration;

/// Serial line settings of an `rtu://` link: one RS-485 bus.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SerialSettings {
    pub path: String,
    pub baud: u32,
    /// 'N', 'E' or 'O'.
    pub parity: char,
    pub data_bits: u8,
    pub stop_bits: u8,
    /// Silence kept on the line before every request (`frame_gap`); `None`: t3.5 of the
    /// baud rate (see `serial::BusTiming`).
    pub frame_gap: Option<Duration>,
    /// Extra pause after each answer or timeout before the next request (`turnaround`).
    pub turnaround: Duration,
}

/// The longest `frame_gap` or `turnaround` accepted: longer ones are surely a typo.
const MAX_BUS_PAUSE: Duration = Duration::from_secs(1);

/// Why a link URL is refused; `url` is the URL as written (trimmed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error(
        "expected a URL such as tcp://10.0.0.50:502, rtu+tcp://10.0.0.60:4001 or rtu:///dev/ttyUSB0?baud=9600, found {0:?}"
    )]
    NotAUrl(String),
    #[error("expected {scheme}://HOST[:PORT] with no path or query, found {url:?}")]
    PathOrQuery { scheme: String, url: String },
    #[error("expected {scheme}://HOST[:PORT] with a port 1-65535, found {url:?}")]
    HostPort { scheme: String, url: String },
    #[error("expected rtu:///dev/ttyUSB0?baud=9600 (a device path), found {0:?}")]
    NotADevicePath(String),
    #[error("expected key=value in {pair:?} of {url:?}")]
    NotKeyValue { pair: String, url: String },
    #[error("expected a baud rate such as 9600, found {0:?}")]
    Baud(String),
    #[error("expected parity N, E or O, found {0:?}")]
    Parity(String),
    #[error("expected data bits 5-8, found {0:?}")]
    DataBits(String),
    #[error("expected stop bits 1 or 2, found {0:?}")]
    StopBits(String),
    /// `frame_gap` or `turnaround` (`key`) is not a duration of at most 1 s.
    #[error("expected {key} as a duration of at most 1s such as 5ms, found {value:?}")]
    BusPause { key: String, value: String },
    #[error(
        "unknown serial setting {key:?} in {url:?}: use baud, parity, data, stop, frame_gap, turnaround"
    )]
    UnknownSetting { key: String, url: String },
    #[error("unknown scheme {scheme:?} in {url:?}: use tcp://, rtu+tcp:// or rtu://")]
    UnknownScheme { scheme: String, url: String },
}

fn bus_pause(key: &str, v: &str) -> Result<Duration, LinkError> {
    humantime::parse_duration(v)
        .ok()
        .filter(|d| *d <= MAX_BUS_PAUSE)
        .ok_or_else(|| LinkError::BusPause {
            key: key.to_string(),
            value: v.to_string(),
        })
}

/// One physical link, shared by every unit id behind it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Link {
    /// Modbus TCP (MBAP framing).
    Tcp { host: String, port: u16 },
    /// RTU framing over a TCP socket (serial device servers).
    RtuOverTcp { host: String, port: u16 },
    /// RTU on a local serial port.
    Rtu(SerialSettings),
}

impl Link {
    pub fn is_rtu(&self) -> bool {
        !matches!(self, Link::Tcp { .. })
    }

    /// True when both are the same physical link: one endpoint, or one serial port whatever
    /// the settings written for it (the configuration refuses differing ones).
    pub fn same_port(&self, other: &Link) -> bool {
        match (self, other) {
            (Link::Rtu(a), Link::Rtu(b)) => a.path == b.path,
            (a, b) => a == b,
        }
    }

    /// Parses a device's `modbus.url`.
    pub fn parse(s: &str) -> Result<Link, LinkError> {
        let s = s.trim();
        let url = || s.to_string();
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| LinkError::NotAUrl(url()))?;
        match scheme {
            "tcp" | "rtu+tcp" => {
                let hostport = rest.trim_end_matches('/');
                if hostport.contains('/') || hostport.contains('?') {
                    return Err(LinkError::PathOrQuery {
                        scheme: scheme.to_string(),
                        url: url(),
                    });
                }
                let (host, port) =
                    split_host_port(hostport, if scheme == "tcp" { 502 } else { 4001 })
                        .ok_or_else(|| LinkError::HostPort {
                            scheme: scheme.to_string(),
                            url: url(),
                        })?;
                Ok(if scheme == "tcp" {
                    Link::Tcp { host, port }
                } else {
                    Link::RtuOverTcp { host, port }
                })
            }
            "rtu" => {
                let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
                if !path.starts_with('/') {
                    return Err(LinkError::NotADevicePath(url()));
                }
                let mut serial = SerialSettings {
                    path: path.to_string(),
                    baud: 9600,
                    parity: 'N',
                    data_bits: 8,
                    stop_bits: 1,
                    frame_gap: None,
                    turnaround: Duration::ZERO,
                };
                for kv in query.split('&').filter(|kv| !kv.is_empty()) {
                    let (k, v) = kv.split_once('=').ok_or_else(|| LinkError::NotKeyValue {
                        pair: kv.to_string(),
                        url: url(),
                    })?;
                    match k {
                        "baud" => {
                            serial.baud = v
                                .parse()
                                .ok()
                                .filter(|b| *b > 0)
                                .ok_or_else(|| LinkError::Baud(v.to_string()))?
                        }
                        "parity" => {
                            serial.parity = match v {
                                "N" | "n" | "none" => 'N',
                                "E" | "e" | "even" => 'E',
                                "O" | "o" | "odd" => 'O',
                                _ => return Err(LinkError::Parity(v.to_string())),
                            }
                        }
                        "data" => {
                            serial.data_bits = v
                                .parse()
                                .ok()
                                .filter(|d| (5..=8).contains(d))
                                .ok_or_else(|| LinkError::DataBits(v.to_string()))?
                        }
                        "stop" => {
                            serial.stop_bits = v
                                .parse()
                                .ok()
                                .filter(|d| (1..=2).contains(d))
                                .ok_or_else(|| LinkError::StopBits(v.to_string()))?
                        }
                        "frame_gap" => serial.frame_gap = Some(bus_pause(k, v)?),
                        "turnaround" => serial.turnaround = bus_pause(k, v)?,
                        _ => {
                            return Err(LinkError::UnknownSetting {
                                key: k.to_string(),
                                url: url(),
                            });
                        }
                    }
                }
                Ok(Link::Rtu(serial))
            }
            other => Err(LinkError::UnknownScheme {
                scheme: other.to_string(),
                url: url(),
            }),
        }
    }
}

fn split_host_port(s: &str, default_port: u16) -> Option<(String, u16)> {
    if s.is_empty() {
        return None;
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok().filter(|p| *p > 0)?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        return Some((host.to_string(), port));
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && !h.contains(':') => {
            Some((h.to_string(), p.parse().ok().filter(|p| *p > 0)?))
        }
        Some(_) => None,
        None => Some((s.to_string(), default_port)),
    }
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Link::Tcp { host, port } if host.contains(':') => write!(f, "tcp://[{host}]:{port}"),
            Link::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
            Link::RtuOverTcp { host, port } if host.contains(':') => {
                write!(f, "rtu+tcp://[{host}]:{port}")
            }
            Link::RtuOverTcp { host, port } => write!(f, "rtu+tcp://{host}:{port}"),
            Link::Rtu(s) => {
                write!(
                    f,
                    "rtu://{}?baud={}&parity={}&data={}&stop={}",
                    s.path, s.baud, s.parity, s.data_bits, s.stop_bits
                )?;
                if let Some(g) = s.frame_gap {
                    write!(f, "&frame_gap={}", humantime::format_duration(g))?;
                }
                if !s.turnaround.is_zero() {
                    write!(
                        f,
                        "&turnaround={}",
                        humantime::format_duration(s.turnaround)
                    )?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_link_urls() {
        assert_eq!(
            Link::parse("tcp://10.0.0.50").unwrap(),
            Link::Tcp {
                host: "10.0.0.50".into(),
                port: 502
            }
        );
        assert_eq!(
            Link::parse("rtu+tcp://gw:4002").unwrap(),
            Link::RtuOverTcp {
                host: "gw".into(),
                port: 4002
            }
        );
        let Link::Rtu(s) = Link::parse("rtu:///dev/ttyUSB0?baud=19200&parity=E&stop=1").unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (s.path.as_str(), s.baud, s.parity),
            ("/dev/ttyUSB0", 19200, 'E')
        );
        let Link::Rtu(s) =
            Link::parse("rtu:///dev/ttyUSB1?baud=9600&frame_gap=5ms&turnaround=20ms").unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (s.frame_gap, s.turnaround),
            (Some(Duration::from_millis(5)), Duration::from_millis(20))
        );
        assert_eq!(
            Link::Rtu(s.clone()).to_string(),
            "rtu:///dev/ttyUSB1?baud=9600&parity=N&data=8&stop=1&frame_gap=5ms&turnaround=20ms"
        );
        assert_eq!(
            Link::parse(&Link::Rtu(s.clone()).to_string()),
            Ok(Link::Rtu(s))
        );
        assert_eq!(
            Link::parse("tcp://[::1]:5020").unwrap().to_string(),
            "tcp://[::1]:5020"
        );
        for bad in [
            "10.0.0.5",
            "udp://x:1",
            "tcp://x:0",
            "tcp://x:99999",
            "rtu://ttyUSB0",
            "rtu:///dev/x?baud=fast",
            "rtu:///dev/x?frame_gap=soon",
            "rtu:///dev/x?turnaround=5s",
            "rtu:///dev/x?gap=5ms",
        ] {
            assert!(Link::parse(bad).is_err(), "{bad}");
        }
    }
}
