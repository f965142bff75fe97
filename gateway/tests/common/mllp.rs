//! HL7 v2 over MLLP the way an EMR speaks it: the gateway's listener switched on, the messages
//! an EMR sends (SIU with its MSH and PID), and a client that reads the ACKs.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use clinic_gateway::config::Settings;
use clinic_gateway::emr::hl7::Hl7Link;
use hl7_v2::mllp::MllpCodec;
use hl7_v2::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::{Decoder, Encoder};

use super::{local, TestApp};

/// The MLLP listener on a free port with one worker (`TestApp::mllp_port` tells which).
pub fn enable_mllp(s: &mut Settings) {
    s.mllp.enabled = true;
    s.mllp.bind = "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}"));
    s.mllp.workers = 1;
}

/// A clinic's link to an EMR that sends as `EMR|<facility>`.
pub fn emr_link(facility: &str) -> Hl7Link {
    Hl7Link {
        sending_application: "EMR".into(),
        sending_facility: facility.into(),
        ..Hl7Link::default()
    }
}

/// An MSH from `sender` (`application|facility`), sent now.
pub fn msh(sender: &str, kind: &str, control: &str) -> String {
    format!(
        "MSH|^~\\&|{sender}|CLINIC_GW|GW|{}||{kind}|{control}|P|2.5.1",
        local(0)
    )
}

pub fn pid(phone: &str) -> String {
    // The mobile in the XTN.12 style many EMRs use, the name as Family^Given.
    format!("PID|1||MRN-77^^^SUNRISE^MR||Sharma^Priya||19880412|F|||||^PRN^CP^^^^^^^^^{phone}||en")
}

/// A scheduling message (`kind`: SIU^S12 books, S13 moves, S15 cancels) for a 30-minute
/// check-up starting `start_in_ms` from now.
pub fn siu(
    sender: &str,
    kind: &str,
    control: &str,
    appointment: &str,
    phone: &str,
    start_in_ms: i64,
) -> String {
    [
        msh(sender, kind, control),
        format!(
            "SCH||{appointment}|||||^Checkup|FOLLOWUP|30|MIN|^^30^{}||||||||||||||Booked",
            local(start_in_ms)
        ),
        pid(phone),
        "RGS|1".to_owned(),
        "AIP|1||D7^Rao^Meera^^^Dr".to_owned(),
    ]
    .iter()
    .map(|s| format!("{s}\r"))
    .collect()
}

/// An MLLP client (the EMR's side).
pub struct Mllp<S> {
    /// The raw stream, for tests that write what no well-behaved EMR would.
    pub io: S,
    codec: MllpCodec,
    buf: BytesMut,
}

impl Mllp<TcpStream> {
    /// To the app's MLLP listener.
    pub async fn connect(app: &TestApp) -> Self {
        let port = app
            .mllp_port
            .unwrap_or_else(|| panic!("MLLP is not enabled"));
        Self::connect_port(port).await
    }

    pub async fn connect_port(port: u16) -> Self {
        let io = TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        Self::over(io)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Mllp<S> {
    pub fn over(io: S) -> Self {
        Self {
            io,
            codec: MllpCodec::new(1 << 20),
            buf: BytesMut::new(),
        }
    }

    pub async fn send_raw(&mut self, payload: &[u8]) {
        let mut out = BytesMut::new();
        self.codec
            .encode(payload, &mut out)
            .unwrap_or_else(|e| panic!("{e}"));
        self.io
            .write_all(&out)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// The next frame, or `None` when the peer closes or `timeout` passes first.
    pub async fn read_frame(&mut self, timeout: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(f) = self
                .codec
                .decode(&mut self.buf)
                .unwrap_or_else(|e| panic!("{e}"))
            {
                return Some(f.to_vec());
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            match tokio::time::timeout(left, self.io.read_buf(&mut self.buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Sends one message and returns its ACK.
    pub async fn call(&mut self, message: &str) -> Ack {
        self.send_raw(message.as_bytes()).await;
        let frame = self
            .read_frame(Duration::from_secs(30))
            .await
            .unwrap_or_else(|| panic!("no ACK"));
        Ack(hl7_v2::parse(&frame).unwrap_or_else(|e| panic!("unreadable ACK: {e}")))
    }
}

/// Sends one message on a connection of its own; returns the ACK's code (MSA-1).
pub async fn mllp_call(port: u16, message: &str) -> String {
    Mllp::connect_port(port).await.call(message).await.code()
}

pub struct Ack(pub Message);

impl Ack {
    pub fn get(&self, path: &str) -> String {
        self.0
            .get(path)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_default()
            .to_owned()
    }

    pub fn code(&self) -> String {
        self.get("MSA-1")
    }
}

impl std::fmt::Debug for Ack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.encode().replace('\r', "\n"))
    }
}
