//! What a joining client is replayed: the recovery decision table, as a pure function.
//!
//! A room delivers offsets `1 ..= delivered` and keeps the newest of them in memory
//! (`oldest_in_memory ..= delivered`); older ones are in the engine, as far back as
//! retention reaches.
//!
//! | the client says | answer | replay |
//! |---|---|---|
//! | no `since` | `not_requested` | the recent history in memory |
//! | another epoch | `unrecoverable` | the recent history |
//! | an offset past `delivered` | `unrecoverable` | the recent history (it cannot have seen that) |
//! | an offset within memory's reach | `recovered` | from memory |
//! | an offset further back than `max_replay` | `unrecoverable` | the recent history |
//! | an offset further back, within `max_replay` | `recovered` if the engine still has every message | read from the engine, then memory |

use common::{Position, Recovery};

/// How a join is to be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Answer `recovery` and replay what memory holds after `after`.
    FromMemory {
        /// The answer.
        recovery: Recovery,
        /// Last offset the client has (0: replay everything in memory).
        after: u64,
    },
    /// Read `after + 1 .. before` from the engine first, then replay memory (`before ..`).
    FromEngine {
        /// Last offset the client has.
        after: u64,
        /// Oldest offset in memory.
        before: u64,
    },
}

/// The decision for a client joining with `since`. See the module docs.
pub fn plan(
    since: Option<&Position>,
    epoch: &str,
    delivered: u64,
    oldest_in_memory: u64,
    max_replay: u64,
) -> Plan {
    let unrecoverable = Plan::FromMemory {
        recovery: Recovery::Unrecoverable,
        after: 0,
    };
    match since {
        None => Plan::FromMemory {
            recovery: Recovery::NotRequested,
            after: 0,
        },
        Some(seen) if seen.epoch != epoch || seen.offset > delivered => unrecoverable,
        Some(seen) if seen.offset + 1 >= oldest_in_memory => Plan::FromMemory {
            recovery: Recovery::Recovered,
            after: seen.offset,
        },
        Some(seen) if oldest_in_memory - seen.offset - 1 > max_replay => unrecoverable,
        Some(seen) => Plan::FromEngine {
            after: seen.offset,
            before: oldest_in_memory,
        },
    }
}

/// Whether a read of `after + 1 .. before` that returned `found` entries (ordered, unique)
/// is complete: only then is the client `recovered`.
pub fn complete(after: u64, before: u64, found: usize) -> bool {
    found as u64 == before - after - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(epoch: &str, offset: u64) -> Position {
        Position {
            epoch: epoch.into(),
            offset,
        }
    }

    /// Memory holds 51..=100; the engine reaches back 1000.
    fn decide(since: Option<&Position>) -> Plan {
        plan(since, "e", 100, 51, 1000)
    }

    #[test]
    fn a_plain_join_replays_memory() {
        assert_eq!(
            decide(None),
            Plan::FromMemory {
                recovery: Recovery::NotRequested,
                after: 0
            }
        );
    }

    #[test]
    fn another_epoch_or_a_position_past_the_top_is_unrecoverable() {
        let unrecoverable = Plan::FromMemory {
            recovery: Recovery::Unrecoverable,
            after: 0,
        };
        assert_eq!(decide(Some(&at("old", 60))), unrecoverable);
        assert_eq!(decide(Some(&at("e", 101))), unrecoverable);
        assert_eq!(plan(Some(&at("e", 1)), "e", 0, 1, 1000), unrecoverable);
    }

    #[test]
    fn a_position_within_memory_is_recovered_from_memory() {
        for offset in [50, 51, 99, 100] {
            assert_eq!(
                decide(Some(&at("e", offset))),
                Plan::FromMemory {
                    recovery: Recovery::Recovered,
                    after: offset
                },
                "at {offset}"
            );
        }
        // An empty room: nothing to replay, nothing missed.
        assert_eq!(
            plan(Some(&at("e", 0)), "e", 0, 1, 0),
            Plan::FromMemory {
                recovery: Recovery::Recovered,
                after: 0
            }
        );
    }

    #[test]
    fn an_older_position_reads_the_engine_up_to_max_replay() {
        assert_eq!(
            decide(Some(&at("e", 49))),
            Plan::FromEngine {
                after: 49,
                before: 51
            }
        );
        assert_eq!(
            plan(Some(&at("e", 10)), "e", 2000, 1011, 1000),
            Plan::FromEngine {
                after: 10,
                before: 1011
            }
        );
        assert_eq!(
            plan(Some(&at("e", 9)), "e", 2000, 1011, 1000),
            Plan::FromMemory {
                recovery: Recovery::Unrecoverable,
                after: 0
            }
        );
    }

    #[test]
    fn a_read_is_complete_only_with_every_offset() {
        assert!(complete(49, 51, 1));
        assert!(!complete(10, 51, 39));
        assert!(complete(10, 11, 0));
    }
}
