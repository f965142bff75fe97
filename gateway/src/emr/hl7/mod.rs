//! HL7 v2 over MLLP: how a clinic's EMR is recognised, what its messages become, and where
//! write-backs go.
//!
//! - [`ingest`]: pure mapping from the `hl7-v2` views to clinical requests (SIU → appointments,
//!   ORU/MDM → documents, ADT^A03 → completed visits), or the reason a message is refused.
//! - [`Hl7Service`]: one message in, one ACK out: finds the clinic by MSH-3/MSH-4, drops re-sent
//!   messages by (sender, MSH-10), runs the request through [`crate::clinical::Clinical`], and
//!   answers AA only once that is stored.
//! - [`spawn`]: the MLLP listener (own port, optional TLS, connection limit, idle and slow-loris
//!   timeouts).
//! - [`Hl7WriteBack`]: the [`crate::clinical::EmrLink`] that tells the EMR what the patient
//!   decided (SIU^S15 / S14 over MLLP to the clinic's destination, waiting for the ACK).

pub mod ingest;
mod listener;
mod service;
mod writeback;

use serde::{Deserialize, Serialize};

pub use listener::{spawn, MllpHandle};
pub use service::{Hl7Service, Outcome};
pub use writeback::{build_write_back, Hl7WriteBack};

/// A clinic's HL7 v2 link.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Hl7Link {
    /// MSH-3 sending application that identifies this clinic (namespace id, or universal id;
    /// compared case-insensitively).
    pub sending_application: String,
    /// MSH-4 sending facility that identifies this clinic; empty = any facility of that
    /// application (a link naming the facility wins over one that does not).
    #[serde(default)]
    pub sending_facility: String,
    /// Source addresses allowed to send for this clinic (`10.1.2.3`, `10.1.0.0/16`, IPv6 too);
    /// empty = any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_sources: Vec<String>,
    /// IANA zone of timestamps without an offset (default: the clinic's time zone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// What to answer for a valid message the gateway cannot act on (no patient mobile, no
    /// start time, a PDF that is not one): `AE` (default) or `AA` (accept; the clinic learns of it
    /// through the `hl7.not_processed` callback). Some interface engines stall their queue on
    /// AE; choose `AA` for those.
    #[serde(default)]
    pub unprocessable_ack: UnprocessableAck,
    /// Accept messages with MSH-11 = T (training) or D (debugging) too. Off: they get AR, so a
    /// test system never messages real patients.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub accept_test_messages: bool,
    /// Where patients' decisions are sent back (none: no HL7 write-back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound: Option<Hl7Outbound>,
}

/// The acknowledgment for valid messages that cannot be acted on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum UnprocessableAck {
    #[default]
    Ae,
    Aa,
}

/// The EMR's MLLP receiver for write-backs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hl7Outbound {
    pub host: String,
    pub port: u16,
    /// Connect + send + wait for the ACK, in seconds.
    #[serde(default = "default_ack_timeout")]
    pub ack_timeout_secs: u64,
    /// MSH-3 of the messages the gateway sends.
    #[serde(default = "default_outbound_application")]
    pub sending_application: String,
    /// MSH-4 of the messages the gateway sends (default: the clinic id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sending_facility: Option<String>,
    /// MSH-5/MSH-6 (default: the link's sending application / facility).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiving_application: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiving_facility: Option<String>,
}

fn default_ack_timeout() -> u64 {
    10
}

fn default_outbound_application() -> String {
    "CLINIC_GATEWAY".into()
}

impl Hl7Link {
    /// Whether MSH-3 / MSH-4 (their HD keys) name this link. `Some(true)` = matched including
    /// the facility, `Some(false)` = matched by application only (link without a facility).
    pub fn matches(&self, application: Option<&str>, facility: Option<&str>) -> Option<bool> {
        let app = application?.trim();
        if self.sending_application.trim().is_empty()
            || !app.eq_ignore_ascii_case(self.sending_application.trim())
        {
            return None;
        }
        let own = self.sending_facility.trim();
        if own.is_empty() {
            return Some(false);
        }
        facility
            .is_some_and(|f| f.trim().eq_ignore_ascii_case(own))
            .then_some(true)
    }

    /// Whether `peer` may send for this link.
    pub fn allows(&self, peer: std::net::IpAddr) -> bool {
        self.allowed_sources.is_empty()
            || self
                .allowed_sources
                .iter()
                .any(|s| Cidr::parse(s).is_some_and(|c| c.contains(peer)))
    }

    /// The problems of a configured link, for start-up validation.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.sending_application.trim().is_empty() {
            out.push("emr.hl7.sending_application must name the EMR's MSH-3".to_owned());
        }
        for s in &self.allowed_sources {
            if Cidr::parse(s).is_none() {
                out.push(format!(
                    "emr.hl7.allowed_sources: {s:?} is not an address or CIDR block"
                ));
            }
        }
        if let Some(tz) = &self.time_zone {
            if tz.parse::<chrono_tz::Tz>().is_err() {
                out.push(format!(
                    "emr.hl7.time_zone: {tz:?} is not an IANA time zone"
                ));
            }
        }
        if let Some(o) = &self.outbound {
            if o.host.trim().is_empty() || o.port == 0 {
                out.push("emr.hl7.outbound needs a host and a port".to_owned());
            }
            if o.ack_timeout_secs == 0 {
                out.push("emr.hl7.outbound.ack_timeout_secs must be at least 1".to_owned());
            }
        }
        out
    }
}

/// An address or a CIDR block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cidr {
    addr: std::net::IpAddr,
    prefix: u8,
}

impl Cidr {
    fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a.parse().ok()?, Some(p.parse::<u8>().ok()?)),
            None => (s.parse().ok()?, None),
        };
        let max = match addr {
            std::net::IpAddr::V4(_) => 32,
            std::net::IpAddr::V6(_) => 128,
        };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Self { addr, prefix })
    }

    fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Start-up checks of the MLLP settings and every configured clinic's HL7 link.
pub fn validate_settings(s: &crate::config::Settings) -> Result<(), String> {
    let m = &s.mllp;
    if m.tls_cert.is_some() != m.tls_key.is_some() {
        return Err("mllp.tls_cert and mllp.tls_key must be set together".into());
    }
    if m.enabled {
        if m.max_connections == 0 {
            return Err("mllp.max_connections must be at least 1".into());
        }
        if m.idle_timeout_secs == 0 || m.read_timeout_secs == 0 {
            return Err(
                "mllp.idle_timeout_secs and mllp.read_timeout_secs must be at least 1".into(),
            );
        }
        if m.frame_limit_bytes < 1024 {
            return Err("mllp.frame_limit_bytes must be at least 1024".into());
        }
        if m.dedupe_ttl_secs == 0 {
            return Err("mllp.dedupe_ttl_secs must be at least 1".into());
        }
    }
    let mut senders = std::collections::HashMap::new();
    for c in &s.clinics {
        if let Some(link) = &c.emr.hl7 {
            if let Some(p) = link.problems().into_iter().next() {
                return Err(format!("clinic {}: {p}", c.id));
            }
            let key = (
                link.sending_application.trim().to_ascii_uppercase(),
                link.sending_facility.trim().to_ascii_uppercase(),
            );
            if let Some(other) = senders.insert(key, &c.id) {
                return Err(format!(
                    "clinics {other} and {} have the same emr.hl7 sending_application and sending_facility: messages could not be told apart",
                    c.id
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(app: &str, fac: &str) -> Hl7Link {
        Hl7Link {
            sending_application: app.into(),
            sending_facility: fac.into(),
            ..Hl7Link::default()
        }
    }

    #[test]
    fn links_match_application_and_facility() {
        let l = link("EMR", "SUNRISE");
        assert_eq!(l.matches(Some("emr"), Some("Sunrise")), Some(true));
        assert_eq!(l.matches(Some("EMR"), Some("OTHER")), None);
        assert_eq!(l.matches(Some("EMR"), None), None);
        assert_eq!(l.matches(Some("LIS"), Some("SUNRISE")), None);
        let any = link("EMR", "");
        assert_eq!(any.matches(Some("EMR"), Some("X")), Some(false));
        assert_eq!(link("", "").matches(Some(""), None), None);
    }

    fn ip(s: &str) -> std::net::IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn source_addresses_and_blocks() {
        let mut l = link("EMR", "");
        assert!(l.allows(ip("203.0.113.9")));
        l.allowed_sources = vec!["10.1.0.0/16".into(), "2001:db8::1".into()];
        assert!(l.allows(ip("10.1.200.3")));
        assert!(l.allows(ip("::ffff:10.1.0.1")));
        assert!(!l.allows(ip("10.2.0.1")));
        assert!(l.allows(ip("2001:db8::1")));
        assert!(!l.allows(ip("2001:db8::2")));
        l.allowed_sources = vec!["0.0.0.0/0".into()];
        assert!(l.allows(ip("192.0.2.1")));
        l.allowed_sources = vec!["10.0.0.0/33".into(), "nope".into()];
        assert_eq!(l.problems().len(), 2);
    }

    #[test]
    fn two_clinics_may_not_share_a_sender() {
        let mut s = crate::config::Settings::defaults().unwrap_or_else(|e| panic!("{e}"));
        let clinic = |id: &str, fac: &str| {
            let mut c: crate::config::ClinicConfig = serde_json::from_value(serde_json::json!({
                "id": id, "api_key_sha256": "0".repeat(64), "app_secret": "s", "access_token": "t",
                "numbers": [{"phone_number_id": format!("1{}", id.len()), "tier_mps": 80}]
            }))
            .unwrap_or_else(|e| panic!("{e}"));
            c.emr.hl7 = Some(link("EMR", fac));
            c
        };
        s.clinics = vec![clinic("a", "X"), clinic("bb", "Y")];
        assert!(validate_settings(&s).is_ok());
        s.clinics = vec![clinic("a", "X"), clinic("bb", "x")];
        let e = validate_settings(&s).err().unwrap_or_default();
        assert!(e.contains("same emr.hl7"), "{e}");
    }

    #[test]
    fn stored_links_without_new_fields_still_parse() {
        let old: Hl7Link =
            serde_json::from_str(r#"{"sending_application":"EMR"}"#).unwrap_or_default();
        assert_eq!(old.sending_application, "EMR");
        assert_eq!(old.unprocessable_ack, UnprocessableAck::Ae);
        assert!(old.outbound.is_none());
        let with: Hl7Link = serde_json::from_str(
            r#"{"sending_application":"EMR","unprocessable_ack":"AA","outbound":{"host":"emr.local","port":2576}}"#,
        )
        .unwrap_or_default();
        assert_eq!(with.unprocessable_ack, UnprocessableAck::Aa);
        let out = with.outbound.unwrap_or_else(|| panic!("outbound"));
        assert_eq!(
            (out.ack_timeout_secs, out.sending_application.as_str()),
            (10, "CLINIC_GATEWAY")
        );
    }
}
