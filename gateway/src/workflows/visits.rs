//! After a visit: a follow-up N days later (N by visit type) and a feedback request a
//! configurable time later, whose 1–5 rating and optional comment are recorded.
//!
//! Templates, body placeholders in order:
//! - `visit_follow_up`: name, doctor, clinic.
//! - `feedback_request`: name, clinic; quick replies rating 5, 4, 3, 2, 1 (buttons 0–4).

use serde_json::json;
use whatsapp_cloud::wire::{Content, Text};

use super::compose::{body, quick_replies, send, template};
use super::{Command, Job, SessionForm, Touchpoint};
use crate::domain::records::{Feedback, Visit};
use crate::domain::Lane;
use crate::tenants::ClinicSettings;

pub const FOLLOW_UP: &str = "visit_follow_up";
pub const FEEDBACK: &str = "feedback_request";

const DAY_MS: i64 = 24 * 3_600_000;
/// How long after the request a rating still counts.
pub const FEEDBACK_OPEN_MS: i64 = 7 * DAY_MS;
/// How long after a rating the patient's next text is taken as its comment.
pub const COMMENT_OPEN_MS: i64 = DAY_MS;

/// `RATE:vis_…:4`.
pub fn rating_payload(visit: &str, rating: u8) -> String {
    format!("RATE:{visit}:{rating}")
}

pub fn parse_rating_payload(p: &str) -> Option<(String, u8)> {
    let rest = p.trim().strip_prefix("RATE:")?;
    let (visit, rating) = rest.rsplit_once(':')?;
    let rating: u8 = rating.parse().ok()?;
    (crate::domain::records::is_record_id("vis", visit) && (1..=5).contains(&rating))
        .then(|| (visit.to_owned(), rating))
}

/// A bare digit 1–5 typed after a feedback request.
pub fn parse_rating_text(text: &str) -> Option<u8> {
    let t = text.trim().trim_end_matches(['.', '*', '⭐']).trim();
    t.parse::<u8>().ok().filter(|r| (1..=5).contains(r))
}

/// A visit completed: schedule what follows it. The visit records the due times.
pub fn completed(visit: &mut Visit, clinic: &ClinicSettings, now_ms: i64) -> Vec<Command> {
    let mut out = Vec::new();
    let days = clinic.follow_up.days_for(&visit.visit_type);
    if days > 0 {
        let due_ms = visit.completed_ms + i64::from(days) * DAY_MS;
        if due_ms > now_ms - DAY_MS {
            visit.follow_up_due_ms = Some(due_ms);
            out.push(Command::Schedule {
                job: Job::FollowUp {
                    visit: visit.id.clone(),
                },
                due_ms,
            });
        }
    }
    if let Some(minutes) = clinic.feedback_delay_minutes {
        let due_ms = visit.completed_ms + i64::from(minutes) * 60_000;
        // A visit reported days late gets no feedback request: the patient has moved on.
        if due_ms > now_ms - DAY_MS {
            visit.feedback_due_ms = Some(due_ms);
            out.push(Command::Schedule {
                job: Job::Feedback {
                    visit: visit.id.clone(),
                },
                due_ms,
            });
        }
    }
    out
}

pub fn follow_up_due(visit: &Visit, clinic: &ClinicSettings, now_ms: i64) -> Vec<Command> {
    let content = template(
        FOLLOW_UP,
        &visit.patient,
        clinic,
        vec![body(&[
            &visit.patient.name,
            visit.doctor.as_deref().unwrap_or_default(),
            &clinic.display_name,
        ])],
    );
    vec![send(
        Touchpoint::FollowUp,
        &visit.patient,
        content,
        Lane::Care,
        now_ms + DAY_MS,
        Some(SessionForm::Text),
    )]
}

/// The rating request, unless the patient already rated the visit.
pub fn feedback_due(
    visit: &Visit,
    existing: Option<&Feedback>,
    clinic: &ClinicSettings,
    now_ms: i64,
) -> Vec<Command> {
    if existing.is_some() {
        return Vec::new();
    }
    let mut components = vec![body(&[&visit.patient.name, &clinic.display_name])];
    components.extend(quick_replies(
        (1..=5u8)
            .rev()
            .map(|r| rating_payload(&visit.id, r))
            .collect(),
    ));
    vec![send(
        Touchpoint::Feedback,
        &visit.patient,
        template(FEEDBACK, &visit.patient, clinic, components),
        Lane::Care,
        now_ms + DAY_MS,
        Some(SessionForm::List),
    )]
}

fn thanks(visit: &Visit, body: String, now_ms: i64) -> Command {
    send(
        Touchpoint::ReplyAck,
        &visit.patient,
        Content::Text {
            text: Text {
                body,
                preview_url: false,
            },
        },
        Lane::Care,
        now_ms + DAY_MS,
        None,
    )
}

/// A rating arrived. A second rating of the same visit replaces the first (the patient changed
/// their mind); the comment, if any, is kept.
pub fn rated(
    visit: &Visit,
    rating: u8,
    existing: Option<&Feedback>,
    now_ms: i64,
) -> (Feedback, Vec<Command>) {
    let feedback = Feedback {
        visit: visit.id.clone(),
        tenant: visit.tenant.clone(),
        patient: visit.patient.phone.clone(),
        rating,
        comment: existing.and_then(|f| f.comment.clone()),
        doctor: visit.doctor.clone(),
        received_ms: now_ms,
    };
    let body = if rating <= 3 {
        "Thank you for your rating. We are sorry it was not better: reply with what we could improve."
    } else {
        "Thank you for your rating! If you would like to add a comment, just reply here."
    };
    let commands = vec![
        thanks(visit, body.to_owned(), now_ms),
        Command::Callback {
            event: "feedback.received",
            data: json!({"visit": visit.id, "external_id": visit.external_id, "rating": rating, "patient": visit.patient.phone}),
        },
    ];
    (feedback, commands)
}

/// The patient's comment after a rating.
pub fn commented(
    visit: &Visit,
    feedback: &Feedback,
    comment: &str,
    now_ms: i64,
) -> (Feedback, Vec<Command>) {
    let mut updated = feedback.clone();
    // WhatsApp texts are at most 4096 characters; the clinic's list view wants less.
    updated.comment = Some(comment.chars().take(2_000).collect());
    let commands = vec![
        thanks(
            visit,
            "Thank you, we have passed your comment to the clinic.".into(),
            now_ms,
        ),
        Command::Callback {
            event: "feedback.received",
            data: json!({"visit": visit.id, "external_id": visit.external_id, "rating": updated.rating, "comment": updated.comment, "patient": visit.patient.phone}),
        },
    ];
    (updated, commands)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::appointment::Patient;
    use crate::domain::{TenantId, E164};
    use whatsapp_cloud::wire::{ButtonParameter, Component};

    const NOW: i64 = 1_795_500_000_000;

    fn clinic() -> ClinicSettings {
        let config: crate::config::ClinicConfig = serde_json::from_value(json!({
            "id": "c", "name": "Sunrise Clinic", "api_key_sha256": "0".repeat(64), "app_secret": "s", "access_token": "t",
            "numbers": [{"phone_number_id": "1", "tier_mps": 80}]
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let settings = crate::config::Settings::defaults().unwrap_or_else(|e| panic!("{e}"));
        let mut c = crate::tenants::bootstrap::clinic_from_config(&config, &settings);
        c.follow_up.by_visit_type.insert("Surgery".into(), 3);
        c.follow_up.by_visit_type.insert("vaccination".into(), 0);
        c
    }

    fn visit(visit_type: &str) -> Visit {
        Visit {
            id: crate::domain::records::new_record_id("vis"),
            tenant: TenantId::parse("c").unwrap_or_else(|e| panic!("{e}")),
            external_id: None,
            patient: Patient {
                phone: E164::parse("+919876543210").unwrap_or_else(|e| panic!("{e}")),
                name: "Asha".into(),
                language: None,
            },
            visit_type: visit_type.into(),
            doctor: Some("Dr. Rao".into()),
            appointment: None,
            completed_ms: NOW,
            follow_up_due_ms: None,
            feedback_due_ms: None,
        }
    }

    fn due(cmds: &[Command]) -> Vec<(String, i64)> {
        cmds.iter()
            .filter_map(|c| match c {
                Command::Schedule { job, due_ms } => Some((
                    match job {
                        Job::FollowUp { .. } => "follow_up".to_owned(),
                        Job::Feedback { .. } => "feedback".to_owned(),
                        _ => "other".to_owned(),
                    },
                    *due_ms,
                )),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn follow_up_days_by_visit_type_and_feedback_after_the_delay() {
        let c = clinic();
        let mut v = visit("consultation");
        assert_eq!(
            due(&completed(&mut v, &c, NOW)),
            vec![
                ("follow_up".into(), NOW + 7 * DAY_MS),
                ("feedback".into(), NOW + 120 * 60_000)
            ]
        );
        assert_eq!(v.follow_up_due_ms, Some(NOW + 7 * DAY_MS));
        let mut v = visit("surgery");
        assert_eq!(
            due(&completed(&mut v, &c, NOW))[0].1,
            NOW + 3 * DAY_MS,
            "case-insensitive type"
        );
        let mut v = visit("Vaccination");
        assert_eq!(
            due(&completed(&mut v, &c, NOW)).len(),
            1,
            "0 days: no follow-up"
        );
        let mut late = visit("consultation");
        late.completed_ms = NOW - 10 * DAY_MS;
        assert!(
            completed(&mut late, &c, NOW).is_empty(),
            "reported far too late"
        );
    }

    #[test]
    fn the_feedback_request_offers_five_ratings_once() {
        let c = clinic();
        let v = visit("consultation");
        let cmds = feedback_due(&v, None, &c, NOW);
        let Command::Send {
            content: Content::Template { template },
            session,
            ..
        } = &cmds[0]
        else {
            panic!("{cmds:?}")
        };
        assert_eq!(template.name, FEEDBACK);
        assert_eq!(*session, Some(SessionForm::List));
        let ratings: Vec<u8> = template
            .components
            .iter()
            .filter_map(|c| match c {
                Component::Button { parameters, .. } => match &parameters[0] {
                    ButtonParameter::Payload { payload } => {
                        parse_rating_payload(payload).map(|p| p.1)
                    }
                    _ => None,
                },
                _ => None,
            })
            .collect();
        assert_eq!(ratings, vec![5, 4, 3, 2, 1]);
        let (f, _) = rated(&v, 4, None, NOW);
        assert!(feedback_due(&v, Some(&f), &c, NOW).is_empty());
    }

    #[test]
    fn ratings_and_comments() {
        let v = visit("consultation");
        let (f, cmds) = rated(&v, 2, None, NOW);
        assert_eq!(f.rating, 2);
        assert!(cmds.iter().any(|c| matches!(
            c,
            Command::Callback {
                event: "feedback.received",
                ..
            }
        )));
        let (f, _) = commented(&v, &f, "Long wait at the front desk", NOW);
        assert_eq!(f.comment.as_deref(), Some("Long wait at the front desk"));
        let (f2, _) = rated(&v, 5, Some(&f), NOW);
        assert_eq!(
            (f2.rating, f2.comment),
            (5, f.comment),
            "a new rating keeps the comment"
        );
        assert_eq!(
            parse_rating_payload(&rating_payload(&v.id, 3)),
            Some((v.id.clone(), 3))
        );
        assert_eq!(parse_rating_payload("RATE:vis_x:3"), None);
        assert_eq!(parse_rating_payload(&rating_payload(&v.id, 6)), None);
        assert_eq!(parse_rating_text(" 4 "), Some(4));
        assert_eq!(parse_rating_text("5⭐"), Some(5));
        assert_eq!(parse_rating_text("7"), None);
    }
}
