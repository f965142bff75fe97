//! `clinic-gateway demo` plays a clinic day: the story runs against the demo's own gateway
//! (memory store) and in-process sandbox, and its timeline shows each step in order.

use clinic_gateway::demo;

/// The index of the first line at or after `from` containing `needle`.
fn find(lines: &[String], from: usize, needle: &str) -> usize {
    lines
        .iter()
        .enumerate()
        .skip(from)
        .find(|(_, l)| l.contains(needle))
        .map(|(i, _)| i)
        .unwrap_or_else(|| {
            panic!(
                "no line containing {needle:?} after line {from}:\n{}",
                lines.join("\n")
            )
        })
}

/// Seconds since the story began, from a line's `+04.1s` prefix.
fn elapsed(line: &str) -> f64 {
    line.trim_start_matches('+')
        .split('s')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no elapsed time in {line:?}"))
}

#[actix_rt::test]
async fn the_demo_plays_a_clinic_day_as_a_timeline() {
    let running = demo::start(0)
        .await
        .unwrap_or_else(|e| panic!("demo start: {e}"));
    let timeline = demo::clinic_day(&running, false)
        .await
        .unwrap_or_else(|e| panic!("clinic day: {e}"));
    let lines = timeline.lines();
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with('+') && l.contains("s  ")),
        "{}",
        lines.join("\n")
    );

    // The key steps, in this order (other lines may come between them).
    let steps = [
        "admin  → PATCH /admin/v1/clinics/clinic_demo",
        "clinic → POST /v1/appointments (Asha, Dr. Rao, tomorrow",
        "WhatsApp → Asha: appointment_confirmation + map (Sunrise Family Clinic) [Asha · ",
        "WhatsApp → Asha: visit_reminder [Asha · ",
        "Asha taps Cancel",
        "WhatsApp → Asha: \"Your appointment on",
        "→ cancelled by the patient; the slot is free",
        "clinic → POST /v1/appointments (Ravi, Dr. Rao, tomorrow",
        "WhatsApp → Ravi: appointment_confirmation",
        "WhatsApp → Ravi: visit_reminder",
        "Ravi taps Confirm",
        "WhatsApp → Ravi: \"Thank you, Ravi. See you on",
        "clinic → POST /v1/lab-reports (Meena, Complete blood count",
        "WhatsApp → Meena: lab_report_ready + cbc-meena.pdf (application/pdf",
        "clinic → POST /v1/visits (Meena, consultation with Dr. Rao",
        "WhatsApp → Meena: feedback_request [Meena · Sunrise Family Clinic] (5 - Excellent | 4 - Good | 3 - Okay | 2 - Poor | 1 - Very poor)",
        "WhatsApp → Meena: visit_follow_up [Meena · Dr. Rao · Sunrise Family Clinic]",
        "Meena taps 5 - Excellent",
        "WhatsApp → Meena: \"Thank you for your rating",
        "clinic → GET /v1/stats/appointments (next 2 days) → 2 appointments, 1 cancelled, reminder coverage 100 %, confirmation rate 50 %",
        "clinic → GET /v1/feedback → 1 rating(s), average 5.0 (Meena 5/5)",
    ];
    let mut at = Vec::with_capacity(steps.len());
    let mut from = 0;
    for step in steps {
        let i = find(lines, from, step);
        at.push(i);
        from = i + 1;
    }

    // The reminder shows the buttons the patient taps, and falls due no sooner than 4 s after
    // its booking (24 h + 4 s before the appointment).
    let reminder = &lines[at[3]];
    assert!(
        reminder.contains("(Confirm | Cancel | Reschedule)"),
        "{reminder}"
    );
    assert!(
        elapsed(reminder) - elapsed(&lines[at[1]]) >= 3.9,
        "{}",
        lines.join("\n")
    );
    // The follow-up is due 3 s after the visit was recorded; the feedback request comes first.
    assert!(
        elapsed(&lines[at[16]]) - elapsed(&lines[at[14]]) >= 2.9,
        "{}",
        lines.join("\n")
    );
    // Nothing went to Asha after she cancelled but the acknowledgement.
    let asha_after = lines[at[5] + 1..]
        .iter()
        .filter(|l| l.contains("WhatsApp → Asha"))
        .count();
    assert_eq!(asha_after, 0, "{}", lines.join("\n"));
    assert_eq!(running.sim.sent().len(), 10);
}
