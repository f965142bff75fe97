//! `clinic-gateway templates submit` over real HTTP against the sandbox: the whole library lands
//! on the clinic's WABA, a second run reports "already exists", Meta's refusals are reported in
//! Meta's words.

mod common;

use clinic_gateway::config::Settings;
use clinic_gateway::template_library::{TemplateLibrary, LIBRARY_LANGUAGES, TOUCHPOINT_TEMPLATES};
use clinic_gateway::template_submit::{self, Outcome, SubmitError, SubmitRequest};
use common::{clinic, KEY_A, KEY_B, NUMBER_A, NUMBER_B, WABA_A, WABA_B};
use whatsapp_cloud::sandbox::{Sandbox, SandboxConfig, SandboxHandle};
use whatsapp_cloud::wire::TemplateStatus;
use whatsapp_cloud::{ClientConfig, GraphClient};

fn sandbox() -> SandboxHandle {
    Sandbox::spawn(SandboxConfig::default()).unwrap_or_else(|e| panic!("sandbox: {e}"))
}

fn settings(base_url: &str) -> Settings {
    let mut s = Settings::defaults().unwrap_or_else(|e| panic!("{e}"));
    s.meta.base_url = base_url.to_owned();
    s.clinics = vec![
        clinic("clinic_a", KEY_A, NUMBER_A, WABA_A, 80),
        clinic("clinic_b", KEY_B, NUMBER_B, WABA_B, 80),
    ];
    s.validate().unwrap_or_else(|e| panic!("{e}"));
    s
}

fn request(clinic: &str) -> SubmitRequest {
    SubmitRequest {
        clinic: clinic.into(),
        ..SubmitRequest::default()
    }
}

#[tokio::test]
async fn submit_creates_the_whole_library_once() {
    let sb = sandbox();
    let settings = settings(&sb.base_url());
    let all = TOUCHPOINT_TEMPLATES.len() * LIBRARY_LANGUAGES.len();

    let first = template_submit::run(&settings, &request("clinic_a"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let printed: Vec<String> = first.lines.iter().map(ToString::to_string).collect();
    assert_eq!(
        (first.created(), first.failed(), first.lines.len()),
        (all, 0, all),
        "{printed:#?}"
    );
    assert!(first.warnings.is_empty(), "{:?}", first.warnings);

    // Meta (the sandbox) now lists every template, as defined in the library, waiting for review.
    let listed = sb.state().templates(WABA_A);
    assert_eq!(listed.len(), all);
    assert!(listed.iter().all(|t| t.status == TemplateStatus::Pending));
    let library =
        TemplateLibrary::load(&settings.templates.resolved_dir()).unwrap_or_else(|e| panic!("{e}"));
    for def in library.templates() {
        let t = sb
            .state()
            .template(WABA_A, &def.name, &def.language)
            .unwrap_or_else(|| panic!("{}/{} not on the WABA", def.language, def.name));
        assert_eq!(
            (t.category, &t.components),
            (def.category, &def.components),
            "{}/{}",
            def.language,
            def.name
        );
    }
    // The other clinic's WABA got nothing.
    assert!(sb.state().templates(WABA_B).is_empty());

    // Again: nothing is created twice and nothing fails.
    let second = template_submit::run(&settings, &request("clinic_a"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (second.already_existing(), second.created(), second.failed()),
        (all, 0, 0),
        "{}",
        second.summary()
    );
    assert!(second.lines[0]
        .to_string()
        .contains("already exists (PENDING)"));
    assert_eq!(sb.state().templates(WABA_A).len(), all);

    // A create that races another one gets Meta's duplicate error: still "already exists".
    let client = GraphClient::new(ClientConfig {
        base_url: sb.base_url(),
        ..ClientConfig::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let def = &library.templates()[0];
    assert_eq!(
        template_submit::create_one(&client, "token-clinic_a", WABA_A, def).await,
        Outcome::AlreadyExists { status: None }
    );

    // Meta's refusal comes back in Meta's words.
    let mut bad = def.clone();
    bad.name = "Visit Reminder".into();
    match template_submit::create_one(&client, "token-clinic_a", WABA_A, &bad).await {
        Outcome::Failed { message } => {
            assert!(
                message.contains("(#100)") && message.contains("lowercase"),
                "{message}"
            )
        }
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[tokio::test]
async fn languages_and_dry_run() {
    let sb = sandbox();
    let settings = settings(&sb.base_url());
    let dry = template_submit::run(
        &settings,
        &SubmitRequest {
            clinic: "clinic_b".into(),
            languages: vec!["ta".into(), "hi".into()],
            dry_run: true,
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(dry.lines.len(), 2 * TOUCHPOINT_TEMPLATES.len());
    assert!(dry
        .lines
        .iter()
        .all(|l| (l.language == "ta" || l.language == "hi") && l.outcome == Outcome::WouldCreate));
    assert!(
        sb.state().templates(WABA_B).is_empty(),
        "a dry run creates nothing"
    );

    let tamil = template_submit::run(
        &settings,
        &SubmitRequest {
            clinic: "clinic_b".into(),
            languages: vec!["ta".into()],
            dry_run: false,
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(tamil.created(), TOUCHPOINT_TEMPLATES.len());
    assert!(sb
        .state()
        .templates(WABA_B)
        .iter()
        .all(|t| t.language == "ta"));

    let unknown = template_submit::run(
        &settings,
        &SubmitRequest {
            clinic: "clinic_b".into(),
            languages: vec!["xx".into()],
            dry_run: false,
        },
    )
    .await;
    assert!(
        matches!(&unknown, Err(SubmitError::UnknownLanguage { language, .. }) if language == "xx"),
        "{unknown:?}"
    );
    let nobody = template_submit::run(&settings, &request("clinic_z")).await;
    match nobody {
        Err(e @ SubmitError::UnknownClinic { .. }) => {
            assert!(e.to_string().contains("clinic_a, clinic_b"), "{e}")
        }
        other => panic!("expected an unknown clinic, got {other:?}"),
    }
}
