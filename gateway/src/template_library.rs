//! The template library: every touchpoint's WhatsApp template in Meta's *create* format, one file
//! per template and language (`config/templates/<language>/<name>.json`).
//!
//! The workflows fill these templates positionally, so the shape of each one (header format, body
//! placeholder count, quick-reply buttons) is a contract: [`TOUCHPOINT_TEMPLATES`] states it, and
//! [`TemplateLibrary::validate`] refuses a library that breaks it or breaks Meta's template rules.
//! The same files seed the in-process sandbox and are what `clinic-gateway templates submit` sends
//! to Meta, so the sandbox, the library and the clinic's WABA cannot drift apart.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use whatsapp_cloud::wire::{
    CreateTemplateRequest, ParameterFormat, TemplateButtonDef, TemplateCategory,
    TemplateComponentDef,
};

/// Meta's limit on a template body.
pub const MAX_BODY_CHARS: usize = 1024;
/// Meta's limit on a quick-reply button's text.
pub const MAX_BUTTON_CHARS: usize = 25;
/// Meta's limit on buttons per template.
pub const MAX_BUTTONS: usize = 10;

/// The languages the shipped library covers (Meta's codes).
pub const LIBRARY_LANGUAGES: &[&str] = &["en", "hi", "ta", "te", "mr", "bn", "kn"];

/// What a touchpoint's template must look like for the workflow that fills it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TemplateSpec {
    pub name: &'static str,
    /// `HEADER` component format (`LOCATION`, `DOCUMENT` …), or `None` for no header.
    pub header_format: Option<&'static str>,
    /// Positional body placeholders `{{1}}..{{n}}`.
    pub body_params: usize,
    /// `QUICK_REPLY` buttons, in the order the workflow reads taps (index 0 first).
    pub quick_replies: usize,
}

/// Every touchpoint's template. Body parameters, in order:
/// - `appointment_confirmation`: name, date, time, doctor, clinic (LOCATION header)
/// - `visit_reminder`: name, date, time, doctor; Confirm / Cancel / Reschedule
/// - `appointment_rescheduled`: name, new date, new time, doctor
/// - `appointment_cancelled`: name, date, time
/// - `prescription_ready`: name, doctor, clinic (DOCUMENT header)
/// - `lab_report_ready`, `lab_report_corrected`: name, report title, clinic (DOCUMENT header)
/// - `health_record_ready`: name, document title, clinic (DOCUMENT header)
/// - `visit_follow_up`: name, doctor, clinic
/// - `feedback_request`: name, clinic; buttons 5 … 1 (button `i` is rating `5 - i`)
pub const TOUCHPOINT_TEMPLATES: &[TemplateSpec] = &[
    TemplateSpec {
        name: "appointment_confirmation",
        header_format: Some("LOCATION"),
        body_params: 5,
        quick_replies: 0,
    },
    TemplateSpec {
        name: "visit_reminder",
        header_format: None,
        body_params: 4,
        quick_replies: 3,
    },
    TemplateSpec {
        name: "appointment_rescheduled",
        header_format: None,
        body_params: 4,
        quick_replies: 0,
    },
    TemplateSpec {
        name: "appointment_cancelled",
        header_format: None,
        body_params: 3,
        quick_replies: 0,
    },
    TemplateSpec {
        name: "prescription_ready",
        header_format: Some("DOCUMENT"),
        body_params: 3,
        quick_replies: 0,
    },
    TemplateSpec {
        name: "lab_report_ready",
        header_format: Some("DOCUMENT"),
        body_params: 3,
        quick_replies: 0,
    },
    TemplateSpec {
        name: "lab_report_corrected",
        header_format: Some("DOCUMENT"),
        body_params: 3,
        quick_replies: 0,
    },
    TemplateSpec {
        name: "health_record_ready",
        header_format: Some("DOCUMENT"),
        body_params: 3,
        quick_replies: 0,
    },
    TemplateSpec {
        name: "visit_follow_up",
        header_format: None,
        body_params: 3,
        quick_replies: 0,
    },
    TemplateSpec {
        name: "feedback_request",
        header_format: None,
        body_params: 2,
        quick_replies: 5,
    },
];

/// The contract of one touchpoint template.
pub fn spec(name: &str) -> Option<&'static TemplateSpec> {
    TOUCHPOINT_TEMPLATES.iter().find(|s| s.name == name)
}

/// One thing wrong with one file of the library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file (for a missing template: the file that should exist).
    pub path: PathBuf,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LibraryError {
    #[error("template library {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("template library {}: not a CreateTemplateRequest: {source}", .path.display())]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("template library is invalid ({} problem{}): {}", .0.len(), if .0.len() == 1 { "" } else { "s" }, join(.0))]
    Invalid(Vec<Problem>),
}

fn join(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl LibraryError {
    /// Every problem found (one for I/O and parse errors).
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            LibraryError::Io { path, source } => vec![Problem {
                path: path.clone(),
                message: source.to_string(),
            }],
            LibraryError::Parse { path, source } => vec![Problem {
                path: path.clone(),
                message: source.to_string(),
            }],
            LibraryError::Invalid(p) => p.clone(),
        }
    }
}

/// The loaded library: templates ordered by name, then language.
#[derive(Debug, Clone)]
pub struct TemplateLibrary {
    dir: PathBuf,
    templates: Vec<CreateTemplateRequest>,
    /// The file each template came from (same index as `templates`).
    files: Vec<PathBuf>,
    languages: Vec<String>,
}

impl TemplateLibrary {
    /// Reads and validates the library under `dir`.
    pub fn load(dir: &Path) -> Result<Self, LibraryError> {
        let library = Self::read(dir)?;
        library.validate()?;
        Ok(library)
    }

    /// Reads every `<dir>/<language>/<name>.json` without validating the contract (other files
    /// and directories that hold no `.json` files are ignored).
    pub fn read(dir: &Path) -> Result<Self, LibraryError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| LibraryError::Io { path, source }
        };
        let mut found: Vec<(CreateTemplateRequest, PathBuf)> = Vec::new();
        let mut languages = BTreeSet::new();
        for lang_entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let lang_dir = lang_entry.map_err(io(dir))?.path();
            if !lang_dir.is_dir() {
                continue;
            }
            for file_entry in std::fs::read_dir(&lang_dir).map_err(io(&lang_dir))? {
                let path = file_entry.map_err(io(&lang_dir))?.path();
                if path.extension().and_then(|e| e.to_str()) != Some("json") || !path.is_file() {
                    continue;
                }
                let bytes = std::fs::read(&path).map_err(io(&path))?;
                let template: CreateTemplateRequest =
                    serde_json::from_slice(&bytes).map_err(|source| LibraryError::Parse {
                        path: path.clone(),
                        source,
                    })?;
                if let Some(lang) = lang_dir.file_name().and_then(|n| n.to_str()) {
                    languages.insert(lang.to_owned());
                }
                found.push((template, path));
            }
        }
        found.sort_by(|(a, pa), (b, pb)| {
            (&a.name, &a.language, pa).cmp(&(&b.name, &b.language, pb))
        });
        let (templates, files) = found.into_iter().unzip();
        Ok(Self {
            dir: dir.to_path_buf(),
            templates,
            files,
            languages: languages.into_iter().collect(),
        })
    }

    /// The directory the library was read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every template, ordered by name then language.
    pub fn templates(&self) -> &[CreateTemplateRequest] {
        &self.templates
    }

    /// One template in one language.
    pub fn get(&self, name: &str, language: &str) -> Option<&CreateTemplateRequest> {
        self.templates
            .iter()
            .find(|t| t.name == name && t.language == language)
    }

    /// The languages (directory names) the library holds, sorted.
    pub fn languages(&self) -> &[String] {
        &self.languages
    }

    /// Checks Meta's template rules and the touchpoint contract; reports every problem found,
    /// each naming its file.
    pub fn validate(&self) -> Result<(), LibraryError> {
        let mut problems = Vec::new();
        if self.templates.is_empty() {
            problems.push(Problem {
                path: self.dir.clone(),
                message: "holds no templates (expected <language>/<name>.json files)".into(),
            });
        }
        let mut by_language: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for lang in &self.languages {
            by_language.entry(lang.as_str()).or_default();
        }
        for (t, path) in self.templates.iter().zip(&self.files) {
            let mut report = |message: String| {
                problems.push(Problem {
                    path: path.clone(),
                    message,
                })
            };
            check_location(t, path, &mut report);
            check_template(t, &mut report);
            if let Some(lang) = path
                .parent()
                .and_then(Path::file_name)
                .and_then(|n| n.to_str())
            {
                by_language.entry(lang).or_default().insert(t.name.as_str());
            }
        }
        // Every touchpoint in every language, and the same set of templates everywhere.
        let all_names: BTreeSet<&str> = by_language
            .values()
            .flatten()
            .copied()
            .chain(TOUCHPOINT_TEMPLATES.iter().map(|s| s.name))
            .collect();
        for (lang, names) in &by_language {
            for missing in all_names.difference(names) {
                let why = if spec(missing).is_some() {
                    "missing: every touchpoint template must exist in every language".to_owned()
                } else {
                    let has: Vec<&str> = by_language
                        .iter()
                        .filter(|(_, n)| n.contains(missing))
                        .map(|(l, _)| *l)
                        .collect();
                    format!(
                        "missing: {missing} exists in {} but not in {lang}; every language must have the same templates",
                        has.join(", ")
                    )
                };
                problems.push(Problem {
                    path: self.dir.join(lang).join(format!("{missing}.json")),
                    message: why,
                });
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(LibraryError::Invalid(problems))
        }
    }
}

/// File name is the template name, directory is the language.
fn check_location(t: &CreateTemplateRequest, path: &Path, report: &mut impl FnMut(String)) {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    if stem != t.name {
        report(format!(
            "name is {:?} but the file is {stem}.json (the file name must be the template name)",
            t.name
        ));
    }
    let dir = path
        .parent()
        .and_then(Path::file_name)
        .and_then(|n| n.to_str())
        .unwrap_or("");
    if dir != t.language {
        report(format!(
            "language is {:?} but the file is in {dir}/ (the directory must be the language)",
            t.language
        ));
    }
}

/// Meta's rules and the touchpoint contract for one template.
fn check_template(t: &CreateTemplateRequest, report: &mut impl FnMut(String)) {
    if t.name.is_empty()
        || !t
            .name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        report("name: lowercase letters, digits and _ only".into());
    }
    if t.category != TemplateCategory::Utility {
        report(format!(
            "category is {:?}; touchpoint templates are UTILITY",
            t.category
        ));
    }
    if t.parameter_format != ParameterFormat::Positional {
        report("parameter_format must be positional: the workflows fill {{1}}..{{n}}".into());
    }
    for kind in ["HEADER", "BODY", "FOOTER", "BUTTONS"] {
        let n = t.components.iter().filter(|c| c.kind == kind).count();
        if n > 1 {
            report(format!("{n} {kind} components; at most one is allowed"));
        }
    }
    for c in &t.components {
        if !matches!(c.kind.as_str(), "HEADER" | "BODY" | "FOOTER" | "BUTTONS") {
            report(format!(
                "component type {:?}: expected HEADER, BODY, FOOTER or BUTTONS (upper case)",
                c.kind
            ));
        }
    }

    let header = t.components.iter().find(|c| c.kind == "HEADER");
    let header_format = header.map(|h| h.format.as_deref().unwrap_or("TEXT"));
    if let Some(h) = header {
        check_header(h, report);
    }
    let body = t.components.iter().find(|c| c.kind == "BODY");
    let body_params = match body {
        None => {
            report("no BODY component".into());
            0
        }
        Some(b) => check_body(b, report),
    };
    let quick_replies = match t.components.iter().find(|c| c.kind == "BUTTONS") {
        None => 0,
        Some(b) => check_buttons(b.buttons.as_deref().unwrap_or(&[]), report),
    };

    if let Some(s) = spec(&t.name) {
        if header_format != s.header_format {
            report(format!(
                "header is {}, the touchpoint contract says {}",
                header_format.unwrap_or("absent"),
                s.header_format.unwrap_or("no header")
            ));
        }
        if body_params != s.body_params {
            report(format!(
                "BODY has {body_params} placeholders, the touchpoint contract says {}",
                s.body_params
            ));
        }
        if quick_replies != s.quick_replies {
            report(format!(
                "{quick_replies} QUICK_REPLY buttons, the touchpoint contract says {}",
                s.quick_replies
            ));
        }
    }
}

fn check_header(h: &TemplateComponentDef, report: &mut impl FnMut(String)) {
    let format = h.format.as_deref().unwrap_or("TEXT");
    match format {
        "TEXT" => {
            let text = h.text.as_deref().unwrap_or("");
            if text.trim().is_empty() {
                report("TEXT header without text".into());
            }
            if text.chars().count() > 60 {
                report("TEXT header longer than 60 characters".into());
            }
        }
        "IMAGE" | "VIDEO" | "DOCUMENT" => {
            let handles = h
                .example
                .as_ref()
                .and_then(|e| e.get("header_handle"))
                .and_then(|v| v.as_array())
                .filter(|a| !a.is_empty() && a.iter().all(|x| x.as_str().is_some()));
            if handles.is_none() {
                report(format!(
                    "{format} header needs example.header_handle: [\"<sample>\"] (Meta requires a sample)"
                ));
            }
        }
        "LOCATION" => {}
        other => report(format!(
            "header format {other:?}: expected TEXT, IMAGE, VIDEO, DOCUMENT or LOCATION"
        )),
    }
}

/// Placeholders in order of appearance: (byte start, byte end, number). Named ones give `None`.
fn placeholders(text: &str) -> Vec<(usize, usize, Option<usize>)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(rel) = text[from..].find("{{") {
        let start = from + rel;
        let Some(len) = text[start + 2..].find("}}") else {
            break;
        };
        let inner = &text[start + 2..start + 2 + len];
        let end = start + 2 + len + 2;
        out.push((start, end, inner.parse::<usize>().ok()));
        from = end;
    }
    out
}

fn has_words(s: &str) -> bool {
    s.chars().any(char::is_alphanumeric)
}

/// Checks the body and returns its placeholder count.
fn check_body(b: &TemplateComponentDef, report: &mut impl FnMut(String)) -> usize {
    let Some(text) = b.text.as_deref().filter(|t| !t.trim().is_empty()) else {
        report("BODY without text".into());
        return 0;
    };
    let chars = text.chars().count();
    if chars > MAX_BODY_CHARS {
        report(format!(
            "BODY is {chars} characters; Meta allows {MAX_BODY_CHARS}"
        ));
    }
    if text.contains("\n\n\n") {
        report("BODY has more than one blank line in a row".into());
    }
    let found = placeholders(text);
    let mut numbers = BTreeSet::new();
    for (start, end, n) in &found {
        match n {
            Some(n) => {
                numbers.insert(*n);
            }
            None => report(format!(
                "BODY placeholder {} is not positional ({{{{1}}}}, {{{{2}}}} …)",
                &text[*start..*end]
            )),
        }
    }
    let count = numbers.len();
    if numbers.iter().copied().ne(1..=count) {
        report(format!(
            "BODY placeholders {numbers:?} are not numbered 1..{count} without gaps"
        ));
    }
    if let (Some(first), Some(last)) = (found.first(), found.last()) {
        if !has_words(&text[..first.0]) {
            report("BODY starts with a placeholder; Meta rejects that".into());
        }
        if !has_words(&text[last.1..]) {
            report("BODY ends with a placeholder; Meta rejects that".into());
        }
    }
    for pair in found.windows(2) {
        if !has_words(&text[pair[0].1..pair[1].0]) {
            report(format!(
                "BODY placeholders {} and {} are adjacent; Meta needs words between them",
                &text[pair[0].0..pair[0].1],
                &text[pair[1].0..pair[1].1]
            ));
        }
    }
    // Meta rejects templates with too many variables for their length.
    let mut rest = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end, _) in &found {
        rest.push_str(&text[at..*start]);
        rest.push(' ');
        at = *end;
    }
    rest.push_str(&text[at..]);
    let words = rest.split_whitespace().filter(|w| has_words(w)).count();
    if words < 2 * found.len() + 1 {
        report(format!(
            "BODY has {words} words for {} placeholders; Meta wants at least 2n+1",
            found.len()
        ));
    }
    // The sample Meta's reviewers read.
    let sample = b
        .example
        .as_ref()
        .and_then(|e| e.get("body_text"))
        .and_then(|v| v.as_array())
        .and_then(|rows| rows.first())
        .and_then(|row| row.as_array());
    match sample {
        None if count > 0 => {
            report("BODY has placeholders but no example.body_text: [[…]] sample".into())
        }
        Some(row) if row.len() != count => report(format!(
            "example.body_text has {} values for {count} placeholders",
            row.len()
        )),
        Some(row)
            if row
                .iter()
                .any(|v| v.as_str().is_none_or(|s| s.trim().is_empty())) =>
        {
            report("example.body_text values must be non-empty strings".into())
        }
        _ => {}
    }
    count
}

/// Checks the buttons and returns how many are quick replies.
fn check_buttons(buttons: &[TemplateButtonDef], report: &mut impl FnMut(String)) -> usize {
    if buttons.is_empty() {
        report("BUTTONS component without buttons".into());
    }
    if buttons.len() > MAX_BUTTONS {
        report(format!(
            "{} buttons; Meta allows {MAX_BUTTONS}",
            buttons.len()
        ));
    }
    let mut seen = BTreeSet::new();
    let mut quick = 0;
    for (i, b) in buttons.iter().enumerate() {
        if b.kind == "QUICK_REPLY" {
            quick += 1;
        }
        let chars = b.text.chars().count();
        if b.text.trim().is_empty() {
            report(format!("button {i} has no text"));
        } else if chars > MAX_BUTTON_CHARS {
            report(format!(
                "button {i} text {:?} is {chars} characters; Meta allows {MAX_BUTTON_CHARS}",
                b.text
            ));
        }
        if !seen.insert(b.text.as_str()) {
            report(format!("button {i} text {:?} is used twice", b.text));
        }
    }
    quick
}

/// Where to read the library from: `configured` as given when absolute; a relative path is
/// taken from the current directory, and if nothing is there, from the source tree
/// (`gateway/../<configured>`), so `cargo run` and tests work from any directory of the workspace.
pub fn resolve_dir(configured: &Path) -> PathBuf {
    if configured.is_absolute() {
        return configured.to_path_buf();
    }
    let from_cwd = std::env::current_dir()
        .map(|d| d.join(configured))
        .unwrap_or_else(|_| configured.to_path_buf());
    if from_cwd.is_dir() {
        return from_cwd;
    }
    let from_source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(configured);
    if from_source.is_dir() {
        from_source
    } else {
        from_cwd
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/templates")
    }

    fn load_shipped() -> TemplateLibrary {
        TemplateLibrary::load(&shipped()).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn shipped_library_validates_and_covers_every_touchpoint_in_every_language() {
        let lib = load_shipped();
        let mut langs: Vec<&str> = lib.languages().iter().map(String::as_str).collect();
        langs.sort_unstable();
        let mut want = LIBRARY_LANGUAGES.to_vec();
        want.sort_unstable();
        assert_eq!(langs, want);
        assert_eq!(
            lib.templates().len(),
            TOUCHPOINT_TEMPLATES.len() * LIBRARY_LANGUAGES.len()
        );
        for s in TOUCHPOINT_TEMPLATES {
            for lang in LIBRARY_LANGUAGES {
                let t = lib
                    .get(s.name, lang)
                    .unwrap_or_else(|| panic!("{lang}/{}.json", s.name));
                assert_eq!(t.category, TemplateCategory::Utility);
            }
        }
    }

    #[test]
    fn quick_replies_keep_the_contract_order() {
        let lib = load_shipped();
        let texts = |name: &str, lang: &str| -> Vec<String> {
            lib.get(name, lang)
                .and_then(|t| t.components.iter().find(|c| c.kind == "BUTTONS"))
                .and_then(|c| c.buttons.clone())
                .unwrap_or_default()
                .into_iter()
                .map(|b| b.text)
                .collect()
        };
        assert_eq!(
            texts("visit_reminder", "en"),
            ["Confirm", "Cancel", "Reschedule"]
        );
        // The rating digit survives translation: button i is rating 5 - i.
        for lang in LIBRARY_LANGUAGES {
            let ratings = texts("feedback_request", lang);
            assert_eq!(ratings.len(), 5, "{lang}");
            for (i, text) in ratings.iter().enumerate() {
                assert!(
                    text.starts_with(&format!("{} - ", 5 - i)),
                    "{lang} button {i}: {text}"
                );
            }
        }
    }

    #[test]
    fn translations_are_in_their_own_script() {
        let lib = load_shipped();
        // First code point of each script's Unicode block.
        let script = |lang: &str| match lang {
            "hi" | "mr" => Some(0x0900..0x0980),
            "bn" => Some(0x0980..0x0A00),
            "ta" => Some(0x0B80..0x0C00),
            "te" => Some(0x0C00..0x0C80),
            "kn" => Some(0x0C80..0x0D00),
            _ => None,
        };
        for t in lib.templates() {
            let Some(range) = script(&t.language) else {
                continue;
            };
            let body = t
                .components
                .iter()
                .find(|c| c.kind == "BODY")
                .and_then(|c| c.text.clone())
                .unwrap_or_default();
            let native = body
                .chars()
                .filter(|c| range.contains(&u32::from(*c)))
                .count();
            let latin = body.chars().filter(char::is_ascii_alphabetic).count();
            assert!(
                native > 5 * latin,
                "{}/{}: {native} native vs {latin} latin letters",
                t.language,
                t.name
            );
        }
    }

    fn copy_shipped(to: &Path) {
        for lang in LIBRARY_LANGUAGES {
            std::fs::create_dir_all(to.join(lang)).unwrap_or_else(|e| panic!("{e}"));
            for s in TOUCHPOINT_TEMPLATES {
                let file = format!("{}.json", s.name);
                std::fs::copy(shipped().join(lang).join(&file), to.join(lang).join(&file))
                    .unwrap_or_else(|e| panic!("{e}"));
            }
        }
    }

    fn edit(path: &Path, f: impl FnOnce(&mut serde_json::Value)) {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{e}"));
        let mut v: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        f(&mut v);
        std::fs::write(path, v.to_string()).unwrap_or_else(|e| panic!("{e}"));
    }

    fn broken(f: impl FnOnce(&Path)) -> String {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        copy_shipped(dir.path());
        f(dir.path());
        match TemplateLibrary::load(dir.path()) {
            Ok(_) => panic!("a broken library loaded"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_copy_of_the_shipped_library_loads() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        copy_shipped(dir.path());
        TemplateLibrary::load(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn wrong_body_placeholder_count_names_the_file() {
        let err = broken(|d| {
            edit(&d.join("hi/visit_reminder.json"), |v| {
                v["components"][0]["text"] =
                    "नमस्ते {{1}}, आपका अपॉइंटमेंट {{2}} को {{3}} बजे है। कृपया नीचे बटन दबाएँ।".into();
                v["components"][0]["example"]["body_text"] = serde_json::json!([["a", "b", "c"]]);
            })
        });
        assert!(err.contains("hi/visit_reminder.json"), "{err}");
        assert!(
            err.contains("BODY has 3 placeholders, the touchpoint contract says 4"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_translation_names_the_expected_file() {
        let err = broken(|d| {
            std::fs::remove_file(d.join("ta/lab_report_corrected.json"))
                .unwrap_or_else(|e| panic!("{e}"))
        });
        assert!(
            err.contains("ta/lab_report_corrected.json: missing"),
            "{err}"
        );
    }

    #[test]
    fn an_extra_template_in_one_language_only_is_refused() {
        let err = broken(|d| {
            std::fs::copy(
                d.join("en/visit_follow_up.json"),
                d.join("en/visit_follow_up_two.json"),
            )
            .unwrap_or_else(|e| panic!("{e}"));
            edit(&d.join("en/visit_follow_up_two.json"), |v| {
                v["name"] = "visit_follow_up_two".into();
            });
        });
        assert!(
            err.contains("kn/visit_follow_up_two.json: missing"),
            "{err}"
        );
    }

    #[test]
    fn file_name_and_directory_must_match_name_and_language() {
        let err = broken(|d| {
            edit(&d.join("bn/feedback_request.json"), |v| {
                v["language"] = "en".into();
            })
        });
        assert!(err.contains("bn/feedback_request.json"), "{err}");
        assert!(err.contains("the directory must be the language"), "{err}");
    }

    #[test]
    fn button_text_and_count_are_checked() {
        let err = broken(|d| {
            edit(&d.join("te/feedback_request.json"), |v| {
                let buttons = v["components"][1]["buttons"]
                    .as_array_mut()
                    .unwrap_or_else(|| panic!("buttons"));
                buttons.pop();
                buttons[0]["text"] = "5 - this label is far too long for Meta".into();
            })
        });
        assert!(err.contains("te/feedback_request.json"), "{err}");
        assert!(err.contains("Meta allows 25"), "{err}");
        assert!(
            err.contains("4 QUICK_REPLY buttons, the touchpoint contract says 5"),
            "{err}"
        );
    }

    #[test]
    fn header_and_meta_text_rules_are_checked() {
        let err = broken(|d| {
            edit(&d.join("mr/lab_report_ready.json"), |v| {
                v["components"][0]["format"] = "IMAGE".into();
            });
            edit(&d.join("en/appointment_cancelled.json"), |v| {
                v["components"][0]["text"] =
                    "Hello {{1}}, your appointment {{2}}{{3}} has been cancelled by the clinic today."
                        .into();
            });
            edit(&d.join("kn/visit_follow_up.json"), |v| {
                v["components"][0]["text"] = "x".repeat(1025).into();
            });
        });
        assert!(
            err.contains(
                "mr/lab_report_ready.json: header is IMAGE, the touchpoint contract says DOCUMENT"
            ),
            "{err}"
        );
        assert!(
            err.contains(
                "en/appointment_cancelled.json: BODY placeholders {{2}} and {{3}} are adjacent"
            ),
            "{err}"
        );
        assert!(
            err.contains("kn/visit_follow_up.json: BODY is 1025 characters"),
            "{err}"
        );
    }

    #[test]
    fn unparseable_file_is_named() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        copy_shipped(dir.path());
        std::fs::write(dir.path().join("hi/visit_reminder.json"), "{ not json")
            .unwrap_or_else(|e| panic!("{e}"));
        let err = TemplateLibrary::load(dir.path())
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(err.contains("hi/visit_reminder.json"), "{err}");
    }

    #[test]
    fn relative_dirs_fall_back_to_the_source_tree() {
        let d = resolve_dir(Path::new("config/templates"));
        assert!(
            d.join("en/visit_reminder.json").is_file(),
            "{}",
            d.display()
        );
        let abs = Path::new("/nonexistent/templates");
        assert_eq!(resolve_dir(abs), abs);
    }
}
