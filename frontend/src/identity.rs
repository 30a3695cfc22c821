//! Who this browser is: a generated display name the user can change, and the keys that make
//! message ids unique and recognisable as ours. Kept in `localStorage`, so a reload (or another
//! tab) keeps the same name and sees its own messages as its own.

use crate::storage;

const NAME_KEY: &str = "relay.name";
const BROWSER_KEY: &str = "relay.browser";

const ADJECTIVES: [&str; 16] = [
    "Amber", "Brisk", "Calm", "Clever", "Cosmic", "Dapper", "Eager", "Gentle", "Jolly", "Lucky",
    "Mellow", "Nimble", "Quiet", "Rapid", "Sunny", "Witty",
];
const ANIMALS: [&str; 16] = [
    "Badger", "Crane", "Dolphin", "Falcon", "Fox", "Heron", "Koala", "Lynx", "Marten", "Otter",
    "Owl", "Panda", "Puffin", "Raven", "Seal", "Wren",
];

/// The identity of this tab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Display name.
    pub name: String,
    /// Shared by all tabs of this browser.
    pub browser_key: String,
    /// Unique to this tab (this page load).
    pub tab_key: String,
}

/// A friendly name such as "Quiet Otter 42", from a source of numbers in `[0, 1)`.
pub fn generated_name(mut random: impl FnMut() -> f64) -> String {
    let mut pick = |n: usize| ((random() * n as f64) as usize).min(n - 1);
    format!(
        "{} {} {}",
        ADJECTIVES[pick(ADJECTIVES.len())],
        ANIMALS[pick(ANIMALS.len())],
        pick(90) + 10
    )
}

/// A random key of `len` characters from `[0-9a-z]`.
pub fn generated_key(len: usize, mut random: impl FnMut() -> f64) -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    (0..len)
        .map(|_| {
            let index = ((random() * ALPHABET.len() as f64) as usize).min(ALPHABET.len() - 1);
            char::from(ALPHABET[index])
        })
        .collect()
}

/// Loads this browser's identity, creating and storing what is missing.
pub fn load() -> Identity {
    let random = js_sys::Math::random;
    let name = storage::get(NAME_KEY).unwrap_or_else(|| {
        let name = generated_name(random);
        storage::set(NAME_KEY, &name);
        name
    });
    let browser_key = storage::get(BROWSER_KEY)
        .filter(|key| key.len() == 6)
        .unwrap_or_else(|| {
            let key = generated_key(6, random);
            storage::set(BROWSER_KEY, &key);
            key
        });
    Identity {
        name,
        browser_key,
        tab_key: generated_key(4, random),
    }
}

/// Remembers the display name for the next visit.
pub fn save_name(name: &str) {
    storage::set(NAME_KEY, name);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sequence(values: &[f64]) -> impl FnMut() -> f64 + '_ {
        let mut iter = values.iter().cycle();
        move || *iter.next().unwrap()
    }

    #[test]
    fn names_come_from_the_word_lists() {
        assert_eq!(generated_name(sequence(&[0.0])), "Amber Badger 10");
        assert_eq!(generated_name(sequence(&[0.999_999])), "Witty Wren 99");
        assert_eq!(
            generated_name(sequence(&[1.0])),
            "Witty Wren 99",
            "1.0 stays in range"
        );
        let name = generated_name(sequence(&[0.5, 0.5, 0.5]));
        assert!(common::validate_name(&name, 32).is_ok(), "{name}");
    }

    #[test]
    fn keys_have_the_requested_length_and_alphabet() {
        let key = generated_key(6, sequence(&[0.0, 0.3, 0.999]));
        assert_eq!(key, "0az0az");
        assert_eq!(generated_key(4, sequence(&[0.5])).len(), 4);
    }
}
