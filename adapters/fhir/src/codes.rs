//! Required-binding code enums. An unknown code is a parse error that names the path.

/// Define a FHIR code enum with its wire codes.
macro_rules! code_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident => $code:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        pub enum $name {
            $($(#[$vm])* #[doc = concat!("`", $code, "`")] #[serde(rename = $code)] $variant),+
        }

        impl $name {
            /// All codes, in the order of the specification.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The code as it travels on the wire.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $code),+ }
            }

            /// Parse a wire code.
            pub fn from_code(code: &str) -> Option<Self> {
                match code { $($code => Some($name::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

code_enum!(
    /// Appointment.status (R4 appointmentstatus).
    AppointmentStatus {
        Proposed => "proposed", Pending => "pending", Booked => "booked", Arrived => "arrived",
        Fulfilled => "fulfilled", Cancelled => "cancelled", Noshow => "noshow",
        EnteredInError => "entered-in-error", CheckedIn => "checked-in", Waitlist => "waitlist",
    }
);

code_enum!(
    /// Appointment.participant.status (participationstatus).
    ParticipationStatus {
        Accepted => "accepted", Declined => "declined", Tentative => "tentative", NeedsAction => "needs-action",
    }
);

code_enum!(
    /// DiagnosticReport.status (diagnostic-report-status).
    DiagnosticReportStatus {
        Registered => "registered", Partial => "partial", Preliminary => "preliminary", Final => "final",
        Amended => "amended", Corrected => "corrected", Appended => "appended", Cancelled => "cancelled",
        EnteredInError => "entered-in-error", Unknown => "unknown",
    }
);

code_enum!(
    /// DocumentReference.status (document-reference-status).
    DocumentReferenceStatus {
        Current => "current", Superseded => "superseded", EnteredInError => "entered-in-error",
    }
);

code_enum!(
    /// Encounter.status (R4 encounter-status).
    EncounterStatus {
        Planned => "planned", Arrived => "arrived", Triaged => "triaged", InProgress => "in-progress",
        Onleave => "onleave", Finished => "finished", Cancelled => "cancelled",
        EnteredInError => "entered-in-error", Unknown => "unknown",
    }
);

code_enum!(
    /// MedicationRequest.status (medicationrequest-status).
    MedicationRequestStatus {
        Active => "active", OnHold => "on-hold", Cancelled => "cancelled", Completed => "completed",
        EnteredInError => "entered-in-error", Stopped => "stopped", Draft => "draft", Unknown => "unknown",
    }
);

code_enum!(
    /// MedicationRequest.intent (medicationrequest-intent).
    MedicationRequestIntent {
        Proposal => "proposal", Plan => "plan", Order => "order", OriginalOrder => "original-order",
        ReflexOrder => "reflex-order", FillerOrder => "filler-order", InstanceOrder => "instance-order",
        Option => "option",
    }
);

code_enum!(
    /// Communication.status (event-status).
    EventStatus {
        Preparation => "preparation", InProgress => "in-progress", NotDone => "not-done", OnHold => "on-hold",
        Stopped => "stopped", Completed => "completed", EnteredInError => "entered-in-error", Unknown => "unknown",
    }
);

code_enum!(
    /// Bundle.type (bundle-type, R4 plus R5 `subscription-notification`).
    BundleType {
        Document => "document", Message => "message", Transaction => "transaction",
        TransactionResponse => "transaction-response", Batch => "batch", BatchResponse => "batch-response",
        History => "history", Searchset => "searchset", Collection => "collection",
        SubscriptionNotification => "subscription-notification",
    }
);

code_enum!(
    /// Bundle.entry.request.method (http-verb).
    HttpVerb { Get => "GET", Head => "HEAD", Post => "POST", Put => "PUT", Delete => "DELETE", Patch => "PATCH" }
);

code_enum!(
    /// Patient.gender (administrative-gender).
    AdministrativeGender { Male => "male", Female => "female", Other => "other", Unknown => "unknown" }
);

code_enum!(
    /// ContactPoint.system.
    ContactPointSystem {
        Phone => "phone", Fax => "fax", Email => "email", Pager => "pager", Url => "url", Sms => "sms", Other => "other",
    }
);

code_enum!(
    /// ContactPoint.use.
    ContactPointUse { Home => "home", Work => "work", Temp => "temp", Old => "old", Mobile => "mobile" }
);

code_enum!(
    /// OperationOutcome.issue.severity.
    IssueSeverity { Fatal => "fatal", Error => "error", Warning => "warning", Information => "information" }
);

code_enum!(
    /// OperationOutcome.issue.code (issue-type).
    IssueType {
        Invalid => "invalid", Structure => "structure", Required => "required", Value => "value",
        Invariant => "invariant", Security => "security", Login => "login", Unknown => "unknown",
        Expired => "expired", Forbidden => "forbidden", Suppressed => "suppressed", Processing => "processing",
        NotSupported => "not-supported", Duplicate => "duplicate", MultipleMatches => "multiple-matches",
        NotFound => "not-found", Deleted => "deleted", TooLong => "too-long", CodeInvalid => "code-invalid",
        Extension => "extension", TooCostly => "too-costly", BusinessRule => "business-rule",
        Conflict => "conflict", Transient => "transient", LockError => "lock-error", NoStore => "no-store",
        Exception => "exception", Timeout => "timeout", Incomplete => "incomplete", Throttled => "throttled",
        Informational => "informational",
    }
);

code_enum!(
    /// SubscriptionStatus.status (subscription-status).
    SubscriptionState {
        Requested => "requested", Active => "active", Error => "error", Off => "off",
        EnteredInError => "entered-in-error",
    }
);

code_enum!(
    /// SubscriptionStatus.type (subscription-notification-type).
    NotificationType {
        Handshake => "handshake", Heartbeat => "heartbeat", EventNotification => "event-notification",
        QueryStatus => "query-status", QueryEvent => "query-event",
    }
);

code_enum!(
    /// Composition.status (composition-status).
    CompositionStatus {
        Preliminary => "preliminary", Final => "final", Amended => "amended", EnteredInError => "entered-in-error",
    }
);
