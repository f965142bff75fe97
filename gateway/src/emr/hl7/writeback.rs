//! Write-back over MLLP: what the patient decided, as an SIU message to the clinic's EMR.
//!
//! | patient | message | SCH-6 event reason | SCH-25 status |
//! |---|---|---|---|
//! | cancelled | SIU^S15 (cancellation) | `PATCANCEL^Cancelled by the patient^L` | Cancelled |
//! | confirmed | SIU^S14 (modification) | `PATCONFIRM^Confirmed by the patient^L` | Booked |
//! | asked to reschedule | SIU^S14 (modification) | `PATRESCHED^Patient asks for a new time^L` | Booked |
//!
//! HL7 has no "confirmed" scheduling event or filler status (table 0278), so a confirmation is a
//! modification that keeps the appointment booked and says why in SCH-6 (and an NTE). A
//! reschedule request is not a reschedule (S13 carries a new time, which only the clinic can
//! choose), so it is a modification too; the clinic's staff call the patient. The appointment is
//! named by the EMR's id in SCH-2 (filler id), its times in SCH-11 and TQ1, the patient by PID-5
//! and PID-13. MSH-10 is derived from the appointment, version and change, so a retried
//! write-back carries the same control id and the EMR can recognise it.
//!
//! One connection per write-back: connect, send, wait for the ACK (all within the link's
//! `ack_timeout_secs`). AA/CA → done; AE/CE, timeouts, refused connections, unreadable ACKs →
//! retried by the scheduler job with backoff; AR/CR → given up and reported.

use async_trait::async_trait;
use bytes::BytesMut;
use chrono::{DateTime, TimeZone, Utc};
use hl7_v2::mllp::MllpCodec;
use hl7_v2::{Charset, Delimiters, Field, Message, Segment};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::{Decoder, Encoder};

use super::{Hl7Link, Hl7Outbound};
use crate::clinical::{EmrLink, WriteBackError};
use crate::domain::appointment::Appointment;
use crate::tenants::ClinicSettings;
use crate::workflows::PatientChange;

/// Largest ACK read back.
const MAX_ACK: usize = 1 << 20;

/// The HL7 v2 [`EmrLink`].
#[derive(Debug, Default, Clone)]
pub struct Hl7WriteBack;

#[async_trait]
impl EmrLink for Hl7WriteBack {
    fn name(&self) -> &'static str {
        "hl7"
    }

    fn wants(&self, clinic: &ClinicSettings) -> bool {
        clinic
            .emr
            .hl7
            .as_ref()
            .is_some_and(|l| l.outbound.is_some())
    }

    async fn write_back(
        &self,
        clinic: &ClinicSettings,
        appointment: &Appointment,
        change: PatientChange,
    ) -> Result<(), WriteBackError> {
        let Some(link) = clinic.emr.hl7.as_ref() else {
            return Err(WriteBackError::Rejected(
                "the clinic has no HL7 link".into(),
            ));
        };
        let Some(out) = link.outbound.as_ref() else {
            return Err(WriteBackError::Rejected(
                "the clinic's HL7 link has no outbound destination".into(),
            ));
        };
        if appointment.external_id.is_none() {
            // The EMR never knew this appointment (booked through the REST API without an EMR
            // id): there is nothing to update there, which is not a failure.
            tracing::info!(tenant = %clinic.id, appointment = %appointment.id, "no EMR id: nothing to write back over HL7");
            return Ok(());
        }
        let msg = build_write_back(clinic, link, out, appointment, change, Utc::now());
        let control = msg
            .get("MSH-10")
            .ok()
            .flatten()
            .unwrap_or_default()
            .to_owned();
        let ack = exchange(out, &msg.to_bytes()).await?;
        judge_ack(&ack, &control)
    }
}

fn control_id(a: &Appointment, change: PatientChange) -> String {
    let d = Sha256::digest(format!("{}|{}|{change:?}", a.id, a.version).as_bytes());
    // 20 characters: MSH-10 is ST(20) in v2.5.
    format!("WB{}", &hex::encode(&d[..9]))
}

/// The message for a patient's decision (see the module table).
pub fn build_write_back(
    clinic: &ClinicSettings,
    link: &Hl7Link,
    out: &Hl7Outbound,
    a: &Appointment,
    change: PatientChange,
    at: DateTime<Utc>,
) -> Message {
    let d = Delimiters::default();
    let tz: chrono_tz::Tz = super::ingest::zone(clinic, link);
    let local = |ms: i64| {
        tz.timestamp_millis_opt(ms)
            .single()
            .map(|t| t.format("%Y%m%d%H%M%S%z").to_string())
            .unwrap_or_default()
    };
    let (trigger, reason, status, note) = match change {
        PatientChange::Cancelled => (
            "S15",
            ["PATCANCEL", "Cancelled by the patient", "L"],
            "Cancelled",
            "The patient cancelled this appointment on WhatsApp.",
        ),
        PatientChange::Confirmed => (
            "S14",
            ["PATCONFIRM", "Confirmed by the patient", "L"],
            "Booked",
            "The patient confirmed this appointment on WhatsApp.",
        ),
        PatientChange::RescheduleRequested => (
            "S14",
            ["PATRESCHED", "Patient asks for a new time", "L"],
            "Booked",
            "The patient asked on WhatsApp for a new time; please call the patient.",
        ),
    };
    let start = local(a.start_ms);
    let end = a.end_ms.map(local).unwrap_or_default();
    let duration = a
        .end_ms
        .map(|e| ((e - a.start_ms) / 60_000).max(0).to_string())
        .unwrap_or_default();

    let mut msh = Segment::header(&d);
    msh.set(3, out.sending_application.clone())
        .set(
            4,
            out.sending_facility
                .clone()
                .unwrap_or_else(|| clinic.id.to_string()),
        )
        .set(
            5,
            out.receiving_application
                .clone()
                .unwrap_or_else(|| link.sending_application.clone()),
        )
        .set(
            6,
            out.receiving_facility
                .clone()
                .unwrap_or_else(|| link.sending_facility.clone()),
        )
        .set(7, at.format("%Y%m%d%H%M%S+0000").to_string())
        .set_field(9, Field::from_components(["SIU", trigger, "SIU_S12"]))
        .set(10, control_id(a, change))
        .set(11, "P")
        .set(12, "2.5.1")
        .set(18, Charset::Utf8.msh18());

    let mut sch = Segment::new("SCH");
    sch.set(2, a.external_id.clone().unwrap_or_default())
        .set_field(6, Field::from_components(reason))
        .set_field(
            11,
            Field::from_components(["", "", duration.as_str(), start.as_str(), end.as_str()]),
        )
        .set(25, status);
    let mut tq1 = Segment::new("TQ1");
    tq1.set(1, "1").set(7, start.clone()).set(8, end.clone());
    let mut nte = Segment::new("NTE");
    nte.set(1, "1").set(2, "L").set(3, note);
    let mut pid = Segment::new("PID");
    let name = a.patient.name.trim();
    let (given, family) = match name.rsplit_once(' ') {
        Some((g, f)) => (g, f),
        None => ("", name),
    };
    pid.set(1, "1")
        .set_field(5, Field::from_components([family, given]))
        .set_field(
            13,
            Field::from_components([a.patient.phone.as_str(), "PRN", "CP"]),
        );
    let mut rgs = Segment::new("RGS");
    rgs.set(1, "1");
    let mut segments = vec![msh, sch, tq1, nte, pid, rgs];
    if let Some(doctor) = a.doctor.as_deref() {
        let mut aip = Segment::new("AIP");
        aip.set(1, "1")
            .set_field(3, Field::from_components(["", doctor]));
        segments.push(aip);
    }
    Message::new(d, Charset::Utf8, segments)
}

/// Connects, sends one framed message and reads one framed reply.
async fn exchange(out: &Hl7Outbound, payload: &[u8]) -> Result<bytes::Bytes, WriteBackError> {
    let limit = std::time::Duration::from_secs(out.ack_timeout_secs.max(1));
    let dest = format!("{}:{}", out.host, out.port);
    let run = async {
        let mut s = TcpStream::connect((out.host.as_str(), out.port))
            .await
            .map_err(|e| WriteBackError::Retry(format!("connecting to {dest}: {e}")))?;
        let _ = s.set_nodelay(true);
        let mut codec = MllpCodec::new(MAX_ACK);
        let mut frame = BytesMut::new();
        codec
            .encode(payload, &mut frame)
            .map_err(|e| WriteBackError::Rejected(format!("the message cannot be framed: {e}")))?;
        s.write_all(&frame)
            .await
            .map_err(|e| WriteBackError::Retry(format!("sending to {dest}: {e}")))?;
        let mut buf = BytesMut::with_capacity(4096);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(f)) => return Ok(f),
                Ok(None) => {}
                Err(e) => return Err(WriteBackError::Retry(format!("reading the ACK: {e}"))),
            }
            let n = s
                .read_buf(&mut buf)
                .await
                .map_err(|e| WriteBackError::Retry(format!("reading the ACK from {dest}: {e}")))?;
            if n == 0 {
                return match codec.decode_eof(&mut buf) {
                    Ok(Some(f)) => Ok(f),
                    _ => Err(WriteBackError::Retry(format!(
                        "{dest} closed the connection without an ACK"
                    ))),
                };
            }
        }
    };
    tokio::time::timeout(limit, run)
        .await
        .map_err(|_| WriteBackError::Retry(format!("no ACK from {dest} within {limit:?}")))?
}

/// AA/CA → Ok; AE/CE → Retry; AR/CR → Rejected; anything else → Retry.
fn judge_ack(raw: &[u8], control: &str) -> Result<(), WriteBackError> {
    let ack =
        hl7_v2::parse(raw).map_err(|e| WriteBackError::Retry(format!("unreadable ACK: {e}")))?;
    let field = |p: &str| {
        ack.get(p)
            .ok()
            .flatten()
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    let code = field("MSA-1").to_ascii_uppercase();
    let acked = field("MSA-2");
    if !acked.is_empty() && acked != control {
        return Err(WriteBackError::Retry(format!(
            "the ACK acknowledges {acked:?}, not {control:?}"
        )));
    }
    let why = || {
        let text = [field("ERR-8"), field("MSA-3"), field("ERR-3.2")]
            .into_iter()
            .find(|t| !t.is_empty())
            .unwrap_or_else(|| "no reason given".into());
        format!("{code}: {text}")
    };
    match code.as_str() {
        "AA" | "CA" => Ok(()),
        "AR" | "CR" => Err(WriteBackError::Rejected(why())),
        "AE" | "CE" => Err(WriteBackError::Retry(why())),
        _ => Err(WriteBackError::Retry(format!(
            "the reply is not an ACK (MSA-1 {code:?})"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::appointment::{AppointmentId, AppointmentStatus, Patient};
    use crate::domain::{TenantId, E164};
    use serde_json::json;

    fn clinic() -> ClinicSettings {
        let config: crate::config::ClinicConfig = serde_json::from_value(json!({
            "id": "clinic_a", "name": "Sunrise", "api_key_sha256": "0".repeat(64), "app_secret": "s", "access_token": "t",
            "numbers": [{"phone_number_id": "1", "tier_mps": 80}],
            "emr": {"hl7": {"sending_application": "EMR", "sending_facility": "SUNRISE",
                "outbound": {"host": "127.0.0.1", "port": 1}}}
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let settings = crate::config::Settings::defaults().unwrap_or_else(|e| panic!("{e}"));
        crate::tenants::bootstrap::clinic_from_config(&config, &settings)
    }

    fn appointment() -> Appointment {
        Appointment {
            id: AppointmentId::generate(),
            tenant: TenantId::parse("clinic_a").unwrap_or_else(|e| panic!("{e}")),
            external_id: Some("F-9|x".into()),
            patient: Patient {
                phone: E164::parse("+919876543210").unwrap_or_else(|e| panic!("{e}")),
                name: "Priya Sharma".into(),
                language: None,
            },
            doctor: Some("Dr. Rao".into()),
            location: None,
            // 2030-01-15 05:00 UTC = 10:30 in Kolkata.
            start_ms: 1_894_683_600_000,
            end_ms: Some(1_894_685_400_000),
            status: AppointmentStatus::Cancelled,
            response: None,
            version: 2,
            reminders: vec![],
            created_ms: 0,
            updated_ms: 0,
        }
    }

    #[test]
    fn a_cancellation_is_an_s15_naming_the_emr_appointment() {
        let c = clinic();
        let link = c.emr.hl7.clone().unwrap_or_else(|| panic!("link"));
        let out = link.outbound.clone().unwrap_or_else(|| panic!("outbound"));
        let a = appointment();
        let msg = build_write_back(&c, &link, &out, &a, PatientChange::Cancelled, Utc::now());
        let again = hl7_v2::parse(&msg.to_bytes()).unwrap_or_else(|e| panic!("{e}"));
        let get = |p: &str| again.get(p).ok().flatten().unwrap_or_default().to_owned();
        assert_eq!(get("MSH-9"), "SIU");
        assert_eq!(get("MSH-9.2"), "S15");
        assert_eq!(get("MSH-3"), "CLINIC_GATEWAY");
        assert_eq!(get("MSH-4"), "clinic_a");
        assert_eq!(
            (get("MSH-5"), get("MSH-6")),
            ("EMR".into(), "SUNRISE".into())
        );
        assert_eq!(get("MSH-10").len(), 20);
        // Escaped on the wire, the same id after parsing.
        assert_eq!(get("SCH-2"), "F-9|x");
        assert_eq!(get("SCH-11.4"), "20300115103000+0530");
        assert_eq!(get("SCH-11.3"), "30");
        assert_eq!(get("SCH-25"), "Cancelled");
        assert_eq!(get("SCH-6"), "PATCANCEL");
        assert_eq!(get("PID-13"), "+919876543210");
        assert_eq!(
            (get("PID-5"), get("PID-5.2")),
            ("Sharma".into(), "Priya".into())
        );
        // Retries carry the same control id; other changes do not.
        let other = build_write_back(&c, &link, &out, &a, PatientChange::Confirmed, Utc::now());
        assert_eq!(
            msg.get("MSH-10").ok().flatten(),
            build_write_back(&c, &link, &out, &a, PatientChange::Cancelled, Utc::now())
                .get("MSH-10")
                .ok()
                .flatten()
        );
        assert_ne!(
            msg.get("MSH-10").ok().flatten(),
            other.get("MSH-10").ok().flatten()
        );
        assert_eq!(other.get("MSH-9.2").ok().flatten(), Some("S14"));
        assert_eq!(other.get("SCH-25").ok().flatten(), Some("Booked"));
    }

    #[test]
    fn acks_decide_done_retry_or_give_up() {
        let ack = |code: &str, ctrl: &str| {
            format!("MSH|^~\\&|EMR|S|GW|G|2030||ACK^S15^ACK|A1|P|2.5.1\rMSA|{code}|{ctrl}\rERR||SCH^1^2|204^Unknown key identifier^HL70357|E||||appointment not found\r")
        };
        assert_eq!(judge_ack(ack("AA", "WB1").as_bytes(), "WB1"), Ok(()));
        assert_eq!(judge_ack(ack("CA", "WB1").as_bytes(), "WB1"), Ok(()));
        assert!(matches!(
            judge_ack(ack("AR", "WB1").as_bytes(), "WB1"),
            Err(WriteBackError::Rejected(w)) if w.contains("appointment not found")
        ));
        assert!(matches!(
            judge_ack(ack("AE", "WB1").as_bytes(), "WB1"),
            Err(WriteBackError::Retry(_))
        ));
        assert!(matches!(
            judge_ack(ack("AA", "OTHER").as_bytes(), "WB1"),
            Err(WriteBackError::Retry(_))
        ));
        assert!(matches!(
            judge_ack(b"garbage", "WB1"),
            Err(WriteBackError::Retry(_))
        ));
    }

    #[tokio::test]
    async fn appointments_the_emr_never_knew_need_no_write_back() {
        let mut a = appointment();
        a.external_id = None;
        let r = Hl7WriteBack
            .write_back(&clinic(), &a, PatientChange::Cancelled)
            .await;
        assert_eq!(r, Ok(()));
    }

    #[tokio::test]
    async fn refused_connections_are_retried() {
        let c = clinic();
        // Port 1 on loopback: nothing listens.
        let r = Hl7WriteBack
            .write_back(&c, &appointment(), PatientChange::Cancelled)
            .await;
        assert!(matches!(r, Err(WriteBackError::Retry(_))), "{r:?}");
        assert!(Hl7WriteBack.wants(&c));
    }
}
