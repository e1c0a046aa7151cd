//! Applying one message's profile change on top of changes other sessions
//! made meanwhile.
//!
//! Sessions of one user run concurrently, and each message reads the profile
//! when it starts. Writing back the whole profile would let the slower
//! message erase what the faster one wrote. Instead, the keys this message
//! changed (added, replaced or removed, at the top level) are applied to the
//! profile as it is now; for the same key, the last message to finish wins.

use serde_json::{Map, Value};

use super::ProfileChange;
use crate::units::ByteSize;

/// The profile to store for `change` on top of `current` (see [`merge`]);
/// or, when the keys of other sessions merged in take it past the flow's
/// limit, why the turn fails instead.
pub(crate) fn apply(current: &str, change: &ProfileChange) -> Result<String, String> {
    let merged = merge(current, &change.before, &change.after);
    if merged.len() as u64 > change.max_size {
        return Err(format!(
            "profile size limit {} exceeded after merging concurrent changes \
             ({} bytes): nothing of the message was kept",
            ByteSize(change.max_size),
            merged.len()
        ));
    }
    Ok(merged)
}

/// The profile to store: `current` with the top-level changes from `before`
/// to `after` applied. Falls back to `after` if any of them is not a JSON
/// object (the runtime has checked `after`, so this does not happen).
pub(crate) fn merge(current: &str, before: &str, after: &str) -> String {
    if current == before {
        return after.to_owned();
    }
    let (Some(mut current), Some(before), Some(after)) =
        (object(current), object(before), object(after))
    else {
        return after.to_owned();
    };
    for key in before.keys() {
        if !after.contains_key(key) {
            current.remove(key);
        }
    }
    for (key, value) in after {
        if before.get(&key) != Some(&value) {
            current.insert(key, value);
        }
    }
    Value::Object(current).to_string()
}

fn object(text: &str) -> Option<Map<String, Value>> {
    match serde_json::from_str(text) {
        Ok(Value::Object(map)) => Some(map),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::merge;
    use serde_json::{Value, json};

    fn merged(current: Value, before: Value, after: Value) -> Value {
        let text = merge(
            &current.to_string(),
            &before.to_string(),
            &after.to_string(),
        );
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn unchanged_meanwhile_takes_the_new_profile() {
        assert_eq!(
            merged(json!({"a": 1}), json!({"a": 1}), json!({"a": 2, "b": 3})),
            json!({"a": 2, "b": 3})
        );
    }

    #[test]
    fn keeps_keys_another_session_wrote_meanwhile() {
        // Session 1 read {}, set name; session 2 read {} and set lang first.
        assert_eq!(
            merged(json!({"lang": "de"}), json!({}), json!({"name": "Ada"})),
            json!({"lang": "de", "name": "Ada"})
        );
    }

    #[test]
    fn applies_removals_and_last_writer_wins_per_key() {
        assert_eq!(
            merged(
                json!({"name": "Bob", "old": true, "lang": "de"}),
                json!({"name": "Ann", "old": true}),
                json!({"name": "Ada"})
            ),
            json!({"name": "Ada", "lang": "de"})
        );
    }
}
