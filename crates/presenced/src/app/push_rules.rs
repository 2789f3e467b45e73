//! The server-default push rules, as `GET /pushrules/` serves them. Presenced sends no push
//! notifications and stores no user rules, but clients read the rule set at start-up (and
//! some refuse to go on without it), so every user gets the specification's defaults.
//! Spec: <https://spec.matrix.org/v1.15/client-server-api/#predefined-rules>.
//!
//! The rules are kept as data in `push_rules.json`. Where a rule names its user, the file
//! says so as the reference's base rules do (`"pattern_type": "user_id"` or
//! `"user_localpart"`, `"value_type": "user_id"`), and [`default_rules`] fills it in.

use presence_router::UserId;
use serde_json::{Map, Value};

use crate::error::ApiError;

/// The default rule set, by kind (`override`, `content`, `room`, `sender`, `underride`).
const DEFAULT_RULES: &str = include_str!("push_rules.json");

/// The rule kinds of a rule set, in the order a server evaluates them.
pub const RULE_KINDS: [&str; 5] = ["override", "content", "room", "sender", "underride"];

/// `user`'s rule set (the `global` scope): the defaults, with `user` filled in.
pub fn default_rules(user: &UserId) -> Result<Map<String, Value>, ApiError> {
    let mut rules: Map<String, Value> =
        serde_json::from_str(DEFAULT_RULES).map_err(ApiError::internal)?;
    for rule in rules.values_mut().filter_map(Value::as_array_mut).flatten() {
        let Some(rule) = rule.as_object_mut() else {
            continue;
        };
        fill_in(rule, user);
        if let Some(conditions) = rule.get_mut("conditions").and_then(Value::as_array_mut) {
            for condition in conditions.iter_mut().filter_map(Value::as_object_mut) {
                fill_in(condition, user);
            }
        }
    }
    Ok(rules)
}

/// Replaces a `pattern_type` / `value_type` placeholder by `user`'s ID or localpart.
fn fill_in(object: &mut Map<String, Value>, user: &UserId) {
    for (placeholder, field) in [("pattern_type", "pattern"), ("value_type", "value")] {
        let value = match object.get(placeholder).and_then(Value::as_str) {
            Some("user_id") => user.as_str(),
            Some("user_localpart") => user.localpart(),
            _ => continue,
        };
        let value = Value::String(value.to_owned());
        object.remove(placeholder);
        object.insert(field.to_owned(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> UserId {
        UserId::parse("@alice:example.org").unwrap()
    }

    fn rule<'a>(rules: &'a Map<String, Value>, kind: &str, id: &str) -> &'a Value {
        rules[kind]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["rule_id"] == id)
            .unwrap_or_else(|| panic!("no {kind} rule {id}"))
    }

    #[test]
    fn every_kind_is_present_and_every_rule_is_a_default() {
        let rules = default_rules(&user()).unwrap();
        let kinds: Vec<&str> = rules.keys().map(String::as_str).collect();
        let mut expected = RULE_KINDS.to_vec();
        expected.sort_unstable();
        assert_eq!(kinds, expected);
        for rule in rules.values().flat_map(|v| v.as_array().unwrap()) {
            assert_eq!(rule["default"], true, "{rule}");
            assert!(rule["enabled"].is_boolean(), "{rule}");
            assert!(rule["actions"].is_array(), "{rule}");
            assert!(rule["rule_id"].as_str().unwrap().starts_with(".m.rule."));
        }
        // The master rule comes first and is off: it would silence everything.
        assert_eq!(rules["override"][0]["rule_id"], ".m.rule.master");
        assert_eq!(rules["override"][0]["enabled"], false);
    }

    #[test]
    fn the_user_is_filled_in() {
        let rules = default_rules(&user()).unwrap();
        let text = serde_json::to_string(&rules).unwrap();
        assert!(!text.contains("pattern_type") && !text.contains("value_type"));
        let invite = rule(&rules, "override", ".m.rule.invite_for_me");
        assert_eq!(invite["conditions"][2]["pattern"], "@alice:example.org");
        let mention = rule(&rules, "override", ".m.rule.is_user_mention");
        assert_eq!(mention["conditions"][0]["value"], "@alice:example.org");
        let name = rule(&rules, "content", ".m.rule.contains_user_name");
        assert_eq!(name["pattern"], "alice");
    }
}
