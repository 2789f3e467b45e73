//! Inbound transactions (`PUT /_matrix/federation/v1/send/{txnId}`), as pure parsing plus a
//! small memory of recent transactions.
//!
//! - Limits: more than 50 PDUs or 100 EDUs is refused with 400 (the reference answers 400
//!   too; `M_BAD_JSON`, since the body breaks the transaction schema).
//! - Idempotence: the answer to each `(origin, txnId)` is remembered for a while; a repeat
//!   gets the same answer and applies nothing.
//! - `m.presence` EDUs become [`RemotePresence`] entries. This layer checks JSON *types*
//!   only, entry by entry: an entry with a wrong-typed field is dropped and counted, the rest
//!   of the EDU still applies. Semantic checks (the user belongs to the origin, the state is
//!   known, the status is not too long, the entry cap) are the engine's.
//! - Other EDU types are acknowledged and ignored. PDUs are acknowledged and ignored too
//!   (this server joins no federated rooms); the answer names each PDU by its event ID,
//!   as the specification's response shape requires.
//!
//! Spec: <https://spec.matrix.org/v1.15/server-server-api/#put_matrixfederationv1sendtxnid>.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use presence_engine::RemotePresence;
use presence_router::ServerName;
use ruma::{CanonicalJsonObject, room_version_rules::RoomVersionRules};
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::{BodyBudget, Error, InboundConfig, wire::PRESENCE_EDU_TYPE};

/// The result of one PDU in a transaction answer: `{}` (accepted) or `{"error": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct PduResult {
    /// Why the PDU was rejected, if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The answer to a transaction: `{"pdus": {event_id: {}}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
#[non_exhaustive]
pub struct TransactionResponse {
    /// One result per PDU, by event ID.
    pub pdus: BTreeMap<String, PduResult>,
}

/// What a transaction held, after type checks.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ParsedTransaction {
    /// Presence entries from every `m.presence` EDU, in order.
    pub presence: Vec<RemotePresence>,
    /// Presence entries dropped for wrong JSON types (plus `m.presence` EDUs whose content
    /// was not an object with a `push` list, counted once each).
    pub dropped_entries: usize,
    /// EDUs of other types, ignored.
    pub ignored_edus: usize,
    /// The answer to send.
    pub response: TransactionResponse,
}

/// Parses a transaction body. Fails only for a body that is not a JSON object, has `pdus`
/// or `edus` of the wrong type, or breaks the limits.
pub fn parse_transaction(body: &[u8], config: &InboundConfig) -> Result<ParsedTransaction, Error> {
    let value: Value = serde_json::from_slice(body).map_err(|_| Error::NotJson)?;
    let Value::Object(mut object) = value else {
        return Err(Error::bad_json("the transaction is not a JSON object"));
    };
    let pdus = take_array(&mut object, "pdus")?;
    let edus = take_array(&mut object, "edus")?;
    if pdus.len() > config.max_pdus || edus.len() > config.max_edus {
        return Err(Error::bad_json(format!(
            "a transaction may hold at most {} PDUs and {} EDUs",
            config.max_pdus, config.max_edus
        )));
    }
    let mut parsed = ParsedTransaction::default();
    for pdu in pdus {
        if let Some(event_id) = pdu_event_id(pdu) {
            parsed
                .response
                .pdus
                .insert(event_id, PduResult { error: None });
        }
    }
    for edu in edus {
        let Value::Object(edu) = edu else {
            parsed.ignored_edus += 1;
            continue;
        };
        if edu.get("edu_type").and_then(Value::as_str) != Some(PRESENCE_EDU_TYPE) {
            parsed.ignored_edus += 1;
            continue;
        }
        let push = edu
            .get("content")
            .and_then(|c| c.get("push"))
            .and_then(Value::as_array);
        let Some(push) = push else {
            parsed.dropped_entries += 1;
            continue;
        };
        for entry in push {
            match presence_entry(entry) {
                Some(p) => parsed.presence.push(p),
                None => parsed.dropped_entries += 1,
            }
        }
    }
    Ok(parsed)
}

/// A missing list counts as empty (some servers leave out an empty `pdus`); a list of the
/// wrong type is an error.
fn take_array(object: &mut Map<String, Value>, key: &str) -> Result<Vec<Value>, Error> {
    match object.remove(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(Error::bad_json(format!("`{key}` must be a list"))),
    }
}

/// The event ID of a PDU: its `event_id` field (room versions 1 and 2), else its reference
/// hash under the current default room version's rules (we are in no rooms, so the room's
/// actual version is unknown; the ID only labels the acknowledgement).
fn pdu_event_id(pdu: Value) -> Option<String> {
    if let Some(id) = pdu.get("event_id").and_then(Value::as_str) {
        return Some(id.to_owned());
    }
    let object: CanonicalJsonObject = serde_json::from_value(pdu).ok()?;
    let hash = ruma::signatures::reference_hash(&object, &RoomVersionRules::V11).ok()?;
    Some(format!("${hash}"))
}

/// Type-checks one `push` entry. Optional fields may be absent or `null`.
fn presence_entry(entry: &Value) -> Option<RemotePresence> {
    let entry = entry.as_object()?;
    let user_id = entry.get("user_id")?.as_str()?.to_owned();
    let presence = entry.get("presence")?.as_str()?.to_owned();
    let last_active_ago = match entry.get("last_active_ago") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64()?),
    };
    let status_msg = match entry.get("status_msg") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_str()?.to_owned()),
    };
    let currently_active = match entry.get("currently_active") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_bool()?),
    };
    Some(RemotePresence {
        user_id,
        presence,
        last_active_ago,
        status_msg,
        currently_active,
    })
}

/// Counters of the inbound endpoint, for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct InboundStats {
    /// Transactions accepted (first delivery).
    pub transactions: u64,
    /// Repeated deliveries answered from memory.
    pub repeats: u64,
    /// Transactions refused (bad body or limits).
    pub rejected: u64,
    /// Presence entries handed on.
    pub presence_entries: u64,
    /// Presence entries dropped by the type checks.
    pub dropped_entries: u64,
    /// Bytes of request bodies being read or handled right now (reserved from the budget).
    pub buffered_body_bytes: u64,
    /// Requests refused with 429 because the body budget stayed full.
    pub refused_busy: u64,
}

/// The outcome of [`Inbound::receive`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Received {
    /// A new transaction: apply its presence, then answer.
    New(ParsedTransaction),
    /// A repeat: answer again, apply nothing.
    Repeat(TransactionResponse),
}

impl Received {
    /// The answer to send.
    pub fn response(&self) -> &TransactionResponse {
        match self {
            Self::New(p) => &p.response,
            Self::Repeat(r) => r,
        }
    }
}

#[derive(Default)]
struct Recent {
    answers: HashMap<(ServerName, String), TransactionResponse>,
    order: VecDeque<(Instant, (ServerName, String))>,
}

/// The inbound transaction handler's state: limits and the memory of recent transactions.
pub struct Inbound {
    config: InboundConfig,
    body_budget: BodyBudget,
    limiter: crate::FederationRateLimiter,
    recent: Mutex<Recent>,
    transactions: AtomicU64,
    repeats: AtomicU64,
    rejected: AtomicU64,
    presence_entries: AtomicU64,
    dropped_entries: AtomicU64,
}

impl std::fmt::Debug for Inbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbound")
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Inbound {
    /// A handler with `config`'s limits.
    pub fn new(config: InboundConfig) -> Self {
        Self {
            body_budget: BodyBudget::new(config.max_buffered_body_bytes, config.body_buffer_wait),
            limiter: crate::FederationRateLimiter::new(config.rate_limit.clone()),
            config,
            recent: Mutex::new(Recent::default()),
            transactions: AtomicU64::new(0),
            repeats: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            presence_entries: AtomicU64::new(0),
            dropped_entries: AtomicU64::new(0),
        }
    }

    /// Waits for `origin`'s turn under `rc_federation` (or refuses the request, 429); hold
    /// the turn while the request is handled.
    pub async fn enter(&self, origin: &ServerName) -> Result<crate::Turn, Error> {
        self.limiter.enter(origin).await
    }

    /// Handles transaction `txn_id` from the authenticated `origin`.
    ///
    /// The answer is remembered as soon as the body is parsed, before the caller applies the
    /// presence, so a concurrent duplicate cannot apply it a second time.
    pub fn receive(
        &self,
        origin: &ServerName,
        txn_id: &str,
        body: &[u8],
    ) -> Result<Received, Error> {
        let key = (origin.clone(), txn_id.to_owned());
        let now = Instant::now();
        let mut recent = self
            .recent
            .lock()
            .map_err(|_| Error::Internal("inbound transaction memory poisoned"))?;
        self.forget_expired(&mut recent, now);
        if let Some(answer) = recent.answers.get(&key) {
            self.repeats.fetch_add(1, Ordering::Relaxed);
            return Ok(Received::Repeat(answer.clone()));
        }
        let parsed = match parse_transaction(body, &self.config) {
            Ok(p) => p,
            Err(e) => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        };
        while recent.order.len() >= self.config.remembered_transactions.max(1) {
            match recent.order.pop_front() {
                Some((_, oldest)) => recent.answers.remove(&oldest),
                None => break,
            };
        }
        recent.answers.insert(key.clone(), parsed.response.clone());
        recent.order.push_back((now, key));
        drop(recent);
        self.transactions.fetch_add(1, Ordering::Relaxed);
        self.presence_entries
            .fetch_add(parsed.presence.len() as u64, Ordering::Relaxed);
        self.dropped_entries
            .fetch_add(parsed.dropped_entries as u64, Ordering::Relaxed);
        if parsed.dropped_entries > 0 {
            tracing::debug!(%origin, %txn_id, dropped = parsed.dropped_entries, "Dropped malformed presence entries.");
        }
        Ok(Received::New(parsed))
    }

    fn forget_expired(&self, recent: &mut Recent, now: Instant) {
        while let Some((at, _)) = recent.order.front() {
            if now.saturating_duration_since(*at) <= self.config.remember_for {
                break;
            }
            if let Some((_, key)) = recent.order.pop_front() {
                recent.answers.remove(&key);
            }
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> InboundStats {
        InboundStats {
            transactions: self.transactions.load(Ordering::Relaxed),
            repeats: self.repeats.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            presence_entries: self.presence_entries.load(Ordering::Relaxed),
            dropped_entries: self.dropped_entries.load(Ordering::Relaxed),
            buffered_body_bytes: self.body_budget.reserved_bytes(),
            refused_busy: self.body_budget.refused(),
        }
    }

    /// The budget of body bytes buffered at once, shared by every inbound request.
    pub fn body_budget(&self) -> &BodyBudget {
        &self.body_budget
    }
}
