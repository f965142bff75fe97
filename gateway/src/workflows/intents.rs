//! What a patient's reply means: a quick-reply payload names the action and the appointment; free
//! text is matched to the same actions in English and the supported Indian languages.

use crate::domain::appointment::AppointmentId;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    Confirm,
    Cancel,
    Reschedule,
}

impl Intent {
    pub fn as_str(self) -> &'static str {
        match self {
            Intent::Confirm => "CONFIRM",
            Intent::Cancel => "CANCEL",
            Intent::Reschedule => "RESCHEDULE",
        }
    }
}

/// The payload a reminder's button carries: `CANCEL:apt_…:3` (action, appointment, version).
pub fn payload(intent: Intent, appointment: &AppointmentId, version: u32) -> String {
    format!("{}:{}:{}", intent.as_str(), appointment, version)
}

/// Parses a button payload made by [`payload`].
pub fn parse_payload(p: &str) -> Option<(Intent, AppointmentId, u32)> {
    let mut parts = p.trim().splitn(3, ':');
    let intent = match parts.next()? {
        "CONFIRM" => Intent::Confirm,
        "CANCEL" => Intent::Cancel,
        "RESCHEDULE" => Intent::Reschedule,
        _ => return None,
    };
    let id = AppointmentId::parse(parts.next()?)?;
    let version = parts.next()?.parse().ok()?;
    Some((intent, id, version))
}

/// Words that mean each action, lower-case: English, Hindi (Devanagari and romanised), Tamil,
/// Telugu, Marathi, Bengali and Kannada, plus the digits of a numbered menu.
const CONFIRM: &[&str] = &[
    "confirm",
    "confirmed",
    "yes",
    "ok",
    "okay",
    "1",
    "हाँ",
    "हां",
    "haan",
    "han",
    "पुष्टि",
    "ஆம்",
    "உறுதி",
    "అవును",
    "నిర్ధారించు",
    "होय",
    "हो",
    "হ্যাঁ",
    "নিশ্চিত",
    "ಹೌದು",
    "ದೃಢೀಕರಿಸಿ",
];
const CANCEL: &[&str] = &[
    "cancel",
    "cancelled",
    "no",
    "2",
    "रद्द",
    "radd",
    "cancel karo",
    "नहीं",
    "ரத்து",
    "வேண்டாம்",
    "రద్దు",
    "వద్దు",
    "रद्द करा",
    "नाही",
    "বাতিল",
    "না",
    "ರದ್ದು",
    "ಬೇಡ",
];
const RESCHEDULE: &[&str] = &[
    "reschedule",
    "change",
    "another time",
    "3",
    "बदलें",
    "समय बदलें",
    "மாற்று",
    "మార్చు",
    "बदला",
    "পরিবর্তন",
    "ಬದಲಿಸಿ",
];

/// Keywords that mean something only when they are the whole reply.
const EXACT_ONLY: &[&str] = &[
    "yes",
    "ok",
    "okay",
    "no",
    "1",
    "2",
    "3",
    "han",
    "हो",
    "नहीं",
    "नाही",
    "না",
    "வேண்டாம்",
    "వద్దు",
    "ಬೇಡ",
];

/// STOP and START in the supported languages; only as the whole reply.
const STOP: &[&str] = &[
    "stop",
    "unsubscribe",
    "रोकें",
    "बंद",
    "बंद करें",
    "நிறுத்து",
    "ఆపు",
    "थांबवा",
    "বন্ধ",
    "বন্ধ করুন",
    "ನಿಲ್ಲಿಸಿ",
];
const START: &[&str] = &[
    "start",
    "subscribe",
    "शुरू",
    "शुरू करें",
    "தொடங்கு",
    "ప్రారంభించు",
    "सुरू",
    "सुरू करा",
    "শুরু",
    "শুরু করুন",
    "ಪ್ರಾರಂಭಿಸಿ",
];

/// The patient's messaging consent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consent {
    Stop,
    Start,
}

/// `STOP` / `START` (any case, translations), as the whole message.
pub fn parse_consent(text: &str) -> Option<Consent> {
    let t = text
        .trim()
        .trim_end_matches(['.', '!'])
        .trim()
        .to_lowercase();
    if STOP.contains(&t.as_str()) {
        Some(Consent::Stop)
    } else if START.contains(&t.as_str()) {
        Some(Consent::Start)
    } else {
        None
    }
}

/// What free text says about the pending appointment question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    Clear(Intent),
    /// Words of more than one action ("cancel or confirm?"): ask which.
    Ambiguous,
    /// None of them: the clinic reads it.
    Unrelated,
}

/// Matches free text to an action; [`Reading::Ambiguous`] when it names several (the patient gets
/// a clarifying question), [`Reading::Unrelated`] when none (the clinic gets the message).
pub fn read_text(text: &str) -> Reading {
    let t = text.trim().to_lowercase();
    let words: Vec<&str> = t
        .split(|c: char| c.is_whitespace() || (c.is_ascii_punctuation() && c != '\'') || c == '।')
        .filter(|w| !w.is_empty())
        .collect();
    // A keyword matches a whole word, or (several words) a phrase in the text. Bare answers
    // ("no", "1") count only as the whole reply: "no problem, see you" is not a cancellation.
    let said = |w: &&str| {
        if EXACT_ONLY.contains(w) {
            words.len() == 1 && words[0] == *w
        } else if w.contains(' ') {
            t.contains(*w)
        } else {
            words.contains(w)
        }
    };
    let hits: Vec<Intent> = [
        (Intent::Confirm, CONFIRM),
        (Intent::Cancel, CANCEL),
        (Intent::Reschedule, RESCHEDULE),
    ]
    .into_iter()
    .filter(|(_, keywords)| keywords.iter().any(said))
    .map(|(i, _)| i)
    .collect();
    match hits.as_slice() {
        [] => Reading::Unrelated,
        [one] => Reading::Clear(*one),
        _ => Reading::Ambiguous,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip() {
        let id = AppointmentId::generate();
        let p = payload(Intent::Cancel, &id, 3);
        assert_eq!(parse_payload(&p), Some((Intent::Cancel, id, 3)));
        assert_eq!(parse_payload("CANCEL:apt_x:1"), None);
        assert_eq!(parse_payload("DELETE:whatever"), None);
    }

    #[test]
    fn free_text_in_several_languages() {
        for (text, intent) in [
            ("Cancel", Intent::Cancel),
            ("please cancel my appointment", Intent::Cancel),
            ("रद्द", Intent::Cancel),
            ("ரத்து", Intent::Cancel),
            ("Yes", Intent::Confirm),
            ("हाँ", Intent::Confirm),
            ("ಹೌದು", Intent::Confirm),
            ("1", Intent::Confirm),
            ("I want to reschedule", Intent::Reschedule),
        ] {
            assert_eq!(read_text(text), Reading::Clear(intent), "{text}");
        }
        assert_eq!(
            read_text("What time is my appointment?"),
            Reading::Unrelated
        );
        assert_eq!(
            read_text("cancel or confirm?"),
            Reading::Ambiguous,
            "ambiguous replies are not guessed"
        );
        assert_eq!(
            read_text("No problem, see you"),
            Reading::Unrelated,
            "a bare word counts only alone"
        );
        assert_eq!(read_text("No"), Reading::Clear(Intent::Cancel));
    }

    #[test]
    fn stop_and_start_in_several_languages_only_as_the_whole_message() {
        for t in ["STOP", "stop.", "Unsubscribe", "रोकें", "நிறுத்து", "ನಿಲ್ಲಿಸಿ"]
        {
            assert_eq!(parse_consent(t), Some(Consent::Stop), "{t}");
        }
        for t in ["START", "शुरू", "শুরু"] {
            assert_eq!(parse_consent(t), Some(Consent::Start), "{t}");
        }
        assert_eq!(parse_consent("please don't stop my medicine"), None);
    }
}
