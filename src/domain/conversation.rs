//! The sales conversation around a trial: the vendor's questions (asked before the trial
//! and at its end) and the prospect's answers, a request to talk to a person, invitations
//! to a named prospect, what the demo is told about the prospect (`prospect.json`), and the
//! funnel a demo's visitors go through. Everything a prospect types here is what they chose
//! to tell the vendor; none of it is the data they uploaded.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{DemoId, Invalid, Prospect, SandboxId, Timestamp, VendorId, parse_text};

/// Questions a demo may ask in each list.
const MAX_QUESTIONS: usize = 20;
const MAX_OPTIONS: usize = 20;
/// Characters of an answer to a text question.
pub const MAX_ANSWER_CHARS: usize = 2000;
/// Characters of a contact request's message.
pub const MAX_MESSAGE_CHARS: usize = 2000;

/// A question as the vendor writes it in the manifest.
#[derive(Clone, Debug, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuestionManifest {
    pub id: Option<String>,
    pub label: Option<String>,
    /// `text` (the default) or `choice`.
    pub kind: Option<String>,
    pub options: Option<Vec<String>>,
    pub required: Option<bool>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum QuestionKind {
    Text,
    Choice,
}

/// A checked question: its id is what answers are keyed by (`q.<id>` in the trial form).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Question {
    pub id: String,
    pub label: String,
    pub kind: QuestionKind,
    /// The choices of a `choice` question; empty for `text`.
    #[serde(default)]
    pub options: Vec<String>,
    #[serde(default)]
    pub required: bool,
}

impl Question {
    /// A list of questions (`field` names it in errors): ids `[a-z0-9_-]{1,40}`, unique;
    /// labels plain text; a choice has 2 to 20 distinct options, a text question none.
    pub fn parse_list(field: &str, raw: Vec<QuestionManifest>) -> Result<Vec<Question>, Invalid> {
        if raw.len() > MAX_QUESTIONS {
            return Err(Invalid::new(
                field,
                format!("must have at most {MAX_QUESTIONS} questions"),
            ));
        }
        let mut questions: Vec<Question> = Vec::with_capacity(raw.len());
        for (i, q) in raw.into_iter().enumerate() {
            let at = format!("{field}[{i}]");
            let id =
                q.id.ok_or_else(|| Invalid::new(format!("{at}.id"), "is required"))?;
            let id_ok = (1..=40).contains(&id.len())
                && id.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                });
            if !id_ok {
                return Err(Invalid::new(
                    format!("{at}.id"),
                    "must be 1 to 40 characters of a-z, 0-9, _ and -",
                ));
            }
            if questions.iter().any(|other| other.id == id) {
                return Err(Invalid::new(
                    format!("{at}.id"),
                    format!("{id:?} is used twice"),
                ));
            }
            let label = parse_text(
                &format!("{at}.label"),
                q.label.as_deref().unwrap_or_default(),
                300,
                false,
            )?;
            if label.is_empty() {
                return Err(Invalid::new(format!("{at}.label"), "is required"));
            }
            let kind = match q.kind.as_deref().unwrap_or("text") {
                "text" => QuestionKind::Text,
                "choice" => QuestionKind::Choice,
                _ => {
                    return Err(Invalid::new(
                        format!("{at}.kind"),
                        "must be \"text\" or \"choice\"",
                    ));
                }
            };
            let mut options = Vec::new();
            for option in q.options.unwrap_or_default() {
                let option = parse_text(&format!("{at}.options"), &option, 100, false)?;
                if option.is_empty() || options.contains(&option) {
                    return Err(Invalid::new(
                        format!("{at}.options"),
                        "must be distinct and not empty",
                    ));
                }
                options.push(option);
            }
            match kind {
                QuestionKind::Text if !options.is_empty() => {
                    return Err(Invalid::new(
                        format!("{at}.options"),
                        "only a choice question has options",
                    ));
                }
                QuestionKind::Choice if !(2..=MAX_OPTIONS).contains(&options.len()) => {
                    return Err(Invalid::new(
                        format!("{at}.options"),
                        format!("a choice question has 2 to {MAX_OPTIONS} options"),
                    ));
                }
                _ => {}
            }
            questions.push(Question {
                id,
                label,
                kind,
                options,
                required: q.required.unwrap_or(false),
            });
        }
        Ok(questions)
    }
}

/// A prospect's answers to a list of questions, by question id: only questions the list
/// asks, a choice only among its options, every required one answered, empty ones left out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(transparent)]
pub struct Answers(BTreeMap<String, String>);

impl Answers {
    /// `raw` as (question id, answer) pairs; `field` is how errors name an answer
    /// (`q.` in the trial form, `answers.` in a feedback body).
    pub fn parse<'a>(
        raw: impl IntoIterator<Item = (&'a str, &'a str)>,
        questions: &[Question],
        field: &str,
    ) -> Result<Answers, Invalid> {
        let mut answers = BTreeMap::new();
        for (id, answer) in raw {
            let name = format!("{field}{id}");
            let Some(question) = questions.iter().find(|q| q.id == id) else {
                return Err(Invalid::new(name, "is not a question of this demo"));
            };
            if answers.contains_key(id) {
                return Err(Invalid::new(name, "is answered twice"));
            }
            let answer = parse_text(&name, answer, MAX_ANSWER_CHARS, true)?;
            if answer.is_empty() {
                continue;
            }
            if question.kind == QuestionKind::Choice && !question.options.contains(&answer) {
                return Err(Invalid::new(name, "is not one of the question's options"));
            }
            answers.insert(id.to_string(), answer);
        }
        if let Some(missing) = questions
            .iter()
            .find(|q| q.required && !answers.contains_key(&q.id))
        {
            return Err(Invalid::new(
                format!("{field}{}", missing.id),
                format!("is required ({})", missing.label),
            ));
        }
        Ok(Answers(answers))
    }

    /// Feedback: answers to a demo's exit questions, at least one of them (`answers.<id>`
    /// in errors).
    pub fn parse_feedback(
        raw: &BTreeMap<String, String>,
        exit_questions: &[Question],
    ) -> Result<Answers, Invalid> {
        let answers = Answers::parse(
            raw.iter()
                .map(|(id, answer)| (id.as_str(), answer.as_str())),
            exit_questions,
            "answers.",
        )?;
        if answers.is_empty() {
            return Err(Invalid::new(
                "answers",
                "must answer at least one exit question",
            ));
        }
        Ok(answers)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn get(&self, id: &str) -> Option<&str> {
        self.0.get(id).map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// What a prospect writes when they ask to talk to a person: plain text, 1 to 2000
/// characters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ContactMessage(String);

impl ContactMessage {
    pub fn parse(raw: &str) -> Result<ContactMessage, Invalid> {
        let text = parse_text("message", raw, MAX_MESSAGE_CHARS, true)?;
        if text.is_empty() {
            return Err(Invalid::new("message", "must not be empty"));
        }
        Ok(ContactMessage(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An invitation's id: it is also what its link carries, so it is random (UUIDv4), never
/// derived from a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InvitationId(uuid::Uuid);

impl InvitationId {
    pub fn new() -> InvitationId {
        InvitationId(uuid::Uuid::new_v4())
    }

    pub fn parse(raw: &str) -> Result<InvitationId, Invalid> {
        uuid::Uuid::try_parse(raw.trim())
            .map(InvitationId)
            .map_err(|_| Invalid::new("invitation", "is not a valid invitation id"))
    }
}

impl Default for InvitationId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for InvitationId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// Longest an invitation may stay open, and how long when the vendor does not say.
const MAX_INVITATION_SECONDS: i64 = 90 * 24 * 3600;
const DEFAULT_INVITATION_SECONDS: i64 = 14 * 24 * 3600;
/// Trials one invitation may start at most.
const MAX_TRIALS_PER_INVITATION: i64 = 100;

/// `POST /v1/invitations` as sent.
#[derive(Clone, Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InvitationRequest {
    pub demo_id: Option<String>,
    /// Operators only: the vendor the invitation is from (its demo's vendor when absent).
    pub vendor_id: Option<String>,
    pub company: Option<String>,
    pub email: Option<String>,
    /// The vendor's personal note, shown on the invitation's page.
    pub note: Option<String>,
    /// Seconds the link stays open (default 14 days, at most 90).
    pub expires_in_seconds: Option<i64>,
    /// Trials the link may start (default 1).
    pub max_trials: Option<i64>,
}

/// What an invitation says, checked (the demo and vendor are settled by the caller).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvitationTerms {
    pub demo_id: DemoId,
    pub company: String,
    pub email: Option<String>,
    pub note: Option<String>,
    pub expires_in_seconds: u32,
    pub max_trials: u32,
}

impl InvitationTerms {
    pub fn parse(request: &InvitationRequest) -> Result<InvitationTerms, Invalid> {
        let demo_id = DemoId::parse(
            request
                .demo_id
                .as_deref()
                .ok_or_else(|| Invalid::new("demo_id", "is required"))?,
        )
        .map_err(|_| Invalid::new("demo_id", "is not a valid demo id"))?;
        let company = Prospect::parse_company(request.company.as_deref().unwrap_or_default())?
            .ok_or_else(|| Invalid::new("company", "is required"))?;
        let email = Prospect::parse_email(request.email.as_deref().unwrap_or_default())?;
        let note = Some(parse_text(
            "note",
            request.note.as_deref().unwrap_or_default(),
            2000,
            true,
        )?)
        .filter(|n| !n.is_empty());
        let seconds = request
            .expires_in_seconds
            .unwrap_or(DEFAULT_INVITATION_SECONDS);
        if !(60..=MAX_INVITATION_SECONDS).contains(&seconds) {
            return Err(Invalid::new(
                "expires_in_seconds",
                format!("must be between 60 and {MAX_INVITATION_SECONDS}"),
            ));
        }
        let max_trials = request.max_trials.unwrap_or(1);
        if !(1..=MAX_TRIALS_PER_INVITATION).contains(&max_trials) {
            return Err(Invalid::new(
                "max_trials",
                format!("must be between 1 and {MAX_TRIALS_PER_INVITATION}"),
            ));
        }
        Ok(InvitationTerms {
            demo_id,
            company,
            email,
            note,
            expires_in_seconds: seconds as u32,
            max_trials: max_trials as u32,
        })
    }
}

/// An invitation as the database keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invitation {
    pub id: InvitationId,
    pub vendor_id: VendorId,
    pub demo_id: DemoId,
    pub company: String,
    pub email: Option<String>,
    pub note: Option<String>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    /// When its link was first opened.
    pub opened_at: Option<Timestamp>,
    pub max_trials: u32,
    /// Trials started with it that count against `max_trials` (a failed one does not).
    pub trials: u32,
    /// The latest trial started with it.
    pub sandbox_id: Option<SandboxId>,
    /// When that trial started.
    pub used_at: Option<Timestamp>,
}

/// Whether an invitation still opens a trial, and if not, why (in words for its page).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvitationState {
    Open,
    Expired,
    Used,
}

impl InvitationState {
    /// As the API and the console name it.
    pub fn as_str(self) -> &'static str {
        match self {
            InvitationState::Open => "open",
            InvitationState::Expired => "expired",
            InvitationState::Used => "used",
        }
    }
}

impl Invitation {
    pub fn new(vendor_id: VendorId, terms: InvitationTerms, now: Timestamp) -> Invitation {
        Invitation {
            id: InvitationId::new(),
            vendor_id,
            demo_id: terms.demo_id,
            company: terms.company,
            email: terms.email,
            note: terms.note,
            created_at: now,
            expires_at: now.plus_seconds(terms.expires_in_seconds),
            opened_at: None,
            max_trials: terms.max_trials,
            trials: 0,
            sandbox_id: None,
            used_at: None,
        }
    }

    pub fn state(&self, now: Timestamp) -> InvitationState {
        if self.trials >= self.max_trials {
            InvitationState::Used
        } else if now >= self.expires_at {
            InvitationState::Expired
        } else {
            InvitationState::Open
        }
    }

    /// The information sheet the invitation fills in.
    pub fn prospect(&self) -> Prospect {
        Prospect {
            email: self.email.clone(),
            company: Some(self.company.clone()),
            needs: None,
        }
    }
}

/// `{data_path}/.testdrive/prospect.json`: what the prospect chose to tell the vendor, for
/// the demo to greet them with. Keys not given are absent; never their email.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProspectNote {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub company: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub needs: Option<String>,
    #[serde(skip_serializing_if = "Answers::is_empty", default)]
    pub answers: Answers,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invitation_note: Option<String>,
}

impl ProspectNote {
    pub fn new(prospect: &Prospect, answers: &Answers, invitation_note: Option<&str>) -> Self {
        ProspectNote {
            company: prospect.company.clone(),
            needs: prospect.needs.clone(),
            answers: answers.clone(),
            invitation_note: invitation_note.map(str::to_string),
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("strings serialise");
        bytes.push(b'\n');
        bytes
    }
}

/// How far a demo's visitors got, counted since a moment: page views then, and of the
/// trials started since, how many reached each step.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Funnel {
    /// The demo's page (and its invitations' pages) shown.
    pub page_views: u64,
    pub trials: u64,
    pub ready: u64,
    /// Opened in the browser (a first request through testdrive).
    pub opened: u64,
    /// Used for 5 minutes or more.
    pub active_5m: u64,
    pub extended: u64,
    pub feedback: u64,
    pub contact_requested: u64,
}

impl Funnel {
    /// The steps in order, with how the console labels them.
    pub fn steps(&self) -> [(&'static str, &'static str, u64); 8] {
        [
            ("page_views", "Page views", self.page_views),
            ("trials", "Trials", self.trials),
            ("ready", "Ready", self.ready),
            ("opened", "Opened", self.opened),
            ("active_5m", "Active 5 min", self.active_5m),
            ("extended", "Extended", self.extended),
            ("feedback", "Feedback", self.feedback),
            ("contact_requested", "Contact", self.contact_requested),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn questions(value: serde_json::Value) -> Result<Vec<Question>, Invalid> {
        Question::parse_list("questions", serde_json::from_value(value).unwrap())
    }

    fn two() -> Vec<Question> {
        questions(json!([
            {"id": "role", "label": "Your role", "kind": "choice",
             "options": ["Analyst", "Engineer"], "required": true},
            {"id": "goal", "label": "What would make this a success?"}
        ]))
        .unwrap()
    }

    #[test]
    fn questions_are_checked() {
        let q = two();
        assert_eq!(q[0].kind, QuestionKind::Choice);
        assert_eq!(q[1].kind, QuestionKind::Text);
        assert!(!q[1].required);
        for bad in [
            json!([{"label": "no id"}]),
            json!([{"id": "Role", "label": "x"}]),
            json!([{"id": "a", "label": "x"}, {"id": "a", "label": "y"}]),
            json!([{"id": "a", "label": ""}]),
            json!([{"id": "a", "label": "x", "kind": "scale"}]),
            json!([{"id": "a", "label": "x", "kind": "choice", "options": ["one"]}]),
            json!([{"id": "a", "label": "x", "kind": "choice", "options": ["a", "a"]}]),
            json!([{"id": "a", "label": "x", "options": ["a", "b"]}]),
            json!([{"id": "a", "label": "line\u{0007}"}]),
        ] {
            assert!(questions(bad.clone()).is_err(), "{bad}");
        }
        let many: Vec<_> = (0..21)
            .map(|i| json!({"id": format!("q{i}"), "label": "x"}))
            .collect();
        assert!(questions(json!(many)).is_err());
    }

    #[test]
    fn answers_follow_the_questions() {
        let q = two();
        let answers =
            Answers::parse([("role", "Analyst"), ("goal", " faster ")], &q, "q.").unwrap();
        assert_eq!(answers.get("goal"), Some("faster"));
        assert_eq!(answers.len(), 2);
        let err = Answers::parse([("goal", "x")], &q, "q.").unwrap_err();
        assert_eq!(err.field, "q.role");
        let err = Answers::parse([("role", "CEO")], &q, "q.").unwrap_err();
        assert_eq!(err.field, "q.role");
        let err = Answers::parse([("role", "Analyst"), ("age", "3")], &q, "q.").unwrap_err();
        assert_eq!(err.field, "q.age");
        assert!(Answers::parse([("role", "Analyst"), ("role", "Engineer")], &q, "q.").is_err());
        // An empty answer is no answer.
        let answers = Answers::parse([("role", "Engineer"), ("goal", "  ")], &q, "q.").unwrap();
        assert_eq!(answers.get("goal"), None);
        let exit = BTreeMap::from([("goal".to_string(), " ".to_string())]);
        assert_eq!(
            Answers::parse_feedback(&exit, &q[1..]).unwrap_err().field,
            "answers"
        );
        let long = "x".repeat(MAX_ANSWER_CHARS + 1);
        assert!(Answers::parse([("role", "Analyst"), ("goal", long.as_str())], &q, "q.").is_err());
    }

    #[test]
    fn invitations_are_checked() {
        let demo = DemoId::new().to_string();
        let request = |extra: serde_json::Value| {
            let mut body = json!({"demo_id": demo, "company": "Globex"});
            for (k, v) in extra.as_object().unwrap() {
                body[k] = v.clone();
            }
            InvitationTerms::parse(&serde_json::from_value(body).unwrap())
        };
        let terms = request(json!({})).unwrap();
        assert_eq!(terms.max_trials, 1);
        assert_eq!(terms.expires_in_seconds, 14 * 24 * 3600);
        for bad in [
            json!({"company": ""}),
            json!({"email": "nobody"}),
            json!({"expires_in_seconds": 10}),
            json!({"expires_in_seconds": 91 * 24 * 3600}),
            json!({"max_trials": 0}),
            json!({"demo_id": "x"}),
        ] {
            assert!(request(bad.clone()).is_err(), "{bad}");
        }
        let now = Timestamp::from_millis(1_000_000);
        let mut invitation = Invitation::new(VendorId::new(), terms, now);
        assert_eq!(invitation.state(now), InvitationState::Open);
        assert_eq!(
            invitation.state(invitation.expires_at),
            InvitationState::Expired
        );
        invitation.trials = 1;
        assert_eq!(invitation.state(now), InvitationState::Used);
    }

    #[test]
    fn the_demo_is_told_only_what_was_given() {
        let prospect = Prospect {
            email: Some("ana@globex.example".into()),
            company: Some("Globex".into()),
            needs: None,
        };
        let note = ProspectNote::new(&prospect, &Answers::default(), Some("Hi Ana"));
        let json: serde_json::Value = serde_json::from_slice(&note.to_json()).unwrap();
        assert_eq!(
            json,
            json!({"company": "Globex", "invitation_note": "Hi Ana"})
        );
    }

    #[test]
    fn contact_messages_are_plain_bounded_text() {
        assert_eq!(
            ContactMessage::parse(" call me \n").unwrap().as_str(),
            "call me"
        );
        assert!(ContactMessage::parse("  ").is_err());
        assert!(ContactMessage::parse(&"x".repeat(MAX_MESSAGE_CHARS + 1)).is_err());
    }
}
