//! The permission claim: room patterns and what each allows.
//!
//! A pattern is a room name, or a prefix followed by `*` (`support-*` matches `support-1`
//! and `support-`; `*` alone matches every room). A room's permissions are the union of every
//! pattern that matches it. Nothing matches: nothing is allowed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a grant allows in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    /// Join the room, receive its messages and history.
    Read,
    /// Send messages into it (publishing needs the room joined, so read too).
    Write,
}

/// A token's room permissions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    patterns: Vec<(String, Vec<Permission>)>,
}

impl Grants {
    /// The grants of a token's `rooms` claim.
    pub fn new(rooms: BTreeMap<String, Vec<Permission>>) -> Grants {
        Grants {
            patterns: rooms.into_iter().collect(),
        }
    }

    /// Read access to exactly these rooms (anonymous connections' grants).
    pub fn read_only(rooms: &[String]) -> Grants {
        Grants {
            patterns: rooms
                .iter()
                .map(|room| (room.clone(), vec![Permission::Read]))
                .collect(),
        }
    }

    /// Whether `permission` is granted in `room`.
    pub fn allows(&self, room: &str, permission: Permission) -> bool {
        self.patterns.iter().any(|(pattern, permissions)| {
            permissions.contains(&permission) && matches(pattern, room)
        })
    }
}

fn matches(pattern: &str, room: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => room.starts_with(prefix),
        None => pattern == room,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(entries: &[(&str, &[Permission])]) -> Grants {
        Grants::new(
            entries
                .iter()
                .map(|(pattern, permissions)| ((*pattern).to_owned(), permissions.to_vec()))
                .collect(),
        )
    }

    #[test]
    fn exact_names_and_trailing_stars_match_and_permissions_add_up() {
        use Permission::{Read, Write};
        let g = grants(&[
            ("support-*", &[Read, Write]),
            ("news", &[Read]),
            ("news*", &[]),
        ]);
        assert!(g.allows("support-1", Read) && g.allows("support-1", Write));
        assert!(g.allows("support-", Write));
        assert!(g.allows("news", Read));
        assert!(!g.allows("news", Write), "read-only");
        assert!(!g.allows("newsroom", Read), "an empty grant allows nothing");
        assert!(!g.allows("support", Read), "the prefix includes the dash");
        assert!(!g.allows("lobby", Read), "not granted");
        let all = grants(&[("*", &[Read])]);
        assert!(all.allows("anything", Read) && !all.allows("anything", Write));
        assert!(!Grants::default().allows("lobby", Read));
    }

    #[test]
    fn anonymous_grants_read_the_named_rooms_only() {
        let g = Grants::read_only(&["lobby".into()]);
        assert!(g.allows("lobby", Permission::Read));
        assert!(!g.allows("lobby", Permission::Write));
        assert!(!g.allows("lobby-2", Permission::Read), "an exact name");
    }
}
