//! Pure text rules for the message log and the room field: links, days, room-name
//! suggestions. No DOM, so all of it is tested natively.

/// Consecutive messages by the same sender within this window are shown as one group.
pub const GROUP_WINDOW_MS: u64 = 5 * 60 * 1000;

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// The local calendar day (days since 1970-01-01 in local time) of `ts` (milliseconds since
/// the Unix epoch), for a time zone `utc_offset_min` minutes ahead of UTC.
pub fn local_day(ts: u64, utc_offset_min: i32) -> i64 {
    (ts as i64 + i64::from(utc_offset_min) * 60_000).div_euclid(DAY_MS)
}

/// "Today" or "Yesterday" for `day` seen on `today`; `None` for other days (shown as a date).
pub fn day_label(day: i64, today: i64) -> Option<&'static str> {
    match today - day {
        0 => Some("Today"),
        1 => Some("Yesterday"),
        _ => None,
    }
}

/// "09:05": a 24-hour clock time, without `format!` (the formatting machinery is large in
/// WebAssembly).
pub fn clock(hours: u32, minutes: u32) -> String {
    let mut time = String::with_capacity(5);
    for (i, part) in [hours, minutes].into_iter().enumerate() {
        if i > 0 {
            time.push(':');
        }
        time.push(char::from(b'0' + (part / 10 % 10) as u8));
        time.push(char::from(b'0' + (part % 10) as u8));
    }
    time
}

/// Splits `text` into plain parts (`false`) and web links (`true`), in order. Only `http://`
/// and `https://` links at the start of a word (after white space or an opening bracket or
/// quote) count; every other scheme
/// (`javascript:`, `data:`, `ftp:`, …) stays plain text. A link ends at white space, and
/// trailing punctuation (`.,;:!?'"`, closing quotes and an unbalanced `)`) is left out of it.
pub fn split_links(text: &str) -> Vec<(bool, &str)> {
    let mut parts = Vec::new();
    let (mut plain_from, mut at) = (0, 0);
    while at < text.len() {
        let rest = &text[at..];
        // After white space, an opening bracket or quote (or any non-ASCII character, such
        // as a curly quote).
        let boundary = at == 0 || {
            let before = text.as_bytes()[at - 1];
            before >= 0x80 || b" \t\r\n([{<'\"".contains(&before)
        };
        let scheme = ["https://", "http://"]
            .iter()
            .find(|s| {
                rest.len() > s.len()
                    && rest.as_bytes()[..s.len()].eq_ignore_ascii_case(s.as_bytes())
            })
            .map_or(0, |s| s.len());
        if boundary && scheme > 0 {
            let mut url = &rest[..rest.find(char::is_whitespace).unwrap_or(rest.len())];
            loop {
                let mut trimmed =
                    url.trim_end_matches(['.', ',', ';', ':', '!', '?', '\'', '"', '”', '’', '»']);
                if trimmed.ends_with(')')
                    && trimmed.matches('(').count() < trimmed.matches(')').count()
                {
                    trimmed = &trimmed[..trimmed.len() - 1];
                }
                if trimmed.len() == url.len() {
                    break;
                }
                url = trimmed;
            }
            if url.len() > scheme {
                if plain_from < at {
                    parts.push((false, &text[plain_from..at]));
                }
                parts.push((true, url));
                at += url.len();
                plain_from = at;
                continue;
            }
        }
        at += rest.chars().next().map_or(1, char::len_utf8);
    }
    if plain_from < text.len() {
        parts.push((false, &text[plain_from..]));
    }
    parts
}

/// `text` as HTML for the message log: every character escaped, so nothing in a message
/// is ever taken for markup, and each web link found by [`split_links`] wrapped in an
/// `<a>` that opens in a new tab without giving that page a handle on this one.
pub fn linkify_html(text: &str) -> String {
    let mut html = String::with_capacity(text.len() + 16);
    for (link, part) in split_links(text) {
        if link {
            html.push_str("<a target=\"_blank\" rel=\"noopener noreferrer\" href=\"");
            escape_into(&mut html, part);
            html.push_str("\">");
            escape_into(&mut html, part);
            html.push_str("</a>");
        } else {
            escape_into(&mut html, part);
        }
    }
    html
}

fn escape_into(html: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => html.push_str("&amp;"),
            '<' => html.push_str("&lt;"),
            '>' => html.push_str("&gt;"),
            '"' => html.push_str("&quot;"),
            '\'' => html.push_str("&#39;"),
            c => html.push(c),
        }
    }
}

/// A valid room name close to what was typed: lowercase, runs of anything other than
/// `a-z 0-9 - _` turned into one `-`, no `-` at either end, at most 32 characters
/// ("Random Stuff" → `random-stuff`). Empty when nothing usable was typed.
pub fn suggest_room(input: &str) -> String {
    let mut room = String::new();
    for c in input.chars().map(|c| c.to_ascii_lowercase()) {
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' {
            c
        } else {
            '-'
        };
        if c != '-' || !(room.is_empty() || room.ends_with('-')) {
            room.push(c);
        }
    }
    room.truncate(common::MAX_ROOM_CHARS);
    room.trim_end_matches('-').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links(text: &str) -> Vec<&str> {
        split_links(text)
            .into_iter()
            .filter_map(|(link, part)| link.then_some(part))
            .collect()
    }

    #[test]
    fn web_links_are_found_and_the_text_around_them_kept() {
        let text = "see https://example.com/a?b=1#c and http://x.org.";
        assert_eq!(
            split_links(text),
            [
                (false, "see "),
                (true, "https://example.com/a?b=1#c"),
                (false, " and "),
                (true, "http://x.org"),
                (false, ".")
            ]
        );
        assert_eq!(split_links("no links"), [(false, "no links")]);
        assert_eq!(links("HTTPS://Example.com"), ["HTTPS://Example.com"]);
        assert_eq!(links("line one\nhttps://a.b\nline"), ["https://a.b"]);
    }

    #[test]
    fn other_schemes_stay_plain_text() {
        for text in [
            "javascript:alert(1)",
            "javascript://http://evil.com",
            "data:text/html,<script>alert(1)</script>",
            "ftp://files.example.com",
            "xhttp://example.com",
            "https://",
            "mailto:a@b.c",
        ] {
            let parts = split_links(text);
            assert!(
                parts
                    .iter()
                    .all(|(link, part)| !link || part.starts_with("http")),
                "{text}: {parts:?}"
            );
        }
        assert!(links("javascript:alert(1)").is_empty());
        assert!(links("data:text/html,hi").is_empty());
        assert!(links("ftp://files.example.com").is_empty());
        assert!(links("xhttp://example.com").is_empty());
        assert_eq!(
            links("javascript://http://evil.com"),
            Vec::<&str>::new(),
            "a link inside another scheme is not at a word boundary"
        );
    }

    #[test]
    fn message_html_escapes_everything_and_links_only_web_addresses() {
        assert_eq!(
            linkify_html("<b>hi</b> & \"bye\" 'x'"),
            "&lt;b&gt;hi&lt;/b&gt; &amp; &quot;bye&quot; &#39;x&#39;"
        );
        assert_eq!(
            linkify_html("see https://a.com/?q=<x>&r=\"1\"."),
            "see <a target=\"_blank\" rel=\"noopener noreferrer\" \
             href=\"https://a.com/?q=&lt;x&gt;&amp;r=&quot;1\">https://a.com/?q=&lt;x&gt;&amp;r=&quot;1</a>&quot;."
        );
        for text in [
            "javascript:alert(1)",
            "data:text/html,<script>alert(1)</script>",
            "ftp://x.org",
            "<a href=\"javascript:alert(1)\">x</a>",
            "<img src=x onerror=alert(1)>",
        ] {
            let html = linkify_html(text);
            assert!(
                !html.contains('<') && !html.contains('"'),
                "{text} -> {html}"
            );
        }
        assert_eq!(linkify_html("two\nlines"), "two\nlines");
    }

    #[test]
    fn trailing_punctuation_is_not_part_of_a_link() {
        assert_eq!(links("go to https://a.com/x."), ["https://a.com/x"]);
        assert_eq!(links("(https://a.com/x)"), ["https://a.com/x"]);
        assert_eq!(
            links("https://en.wikipedia.org/wiki/Rust_(language)!"),
            ["https://en.wikipedia.org/wiki/Rust_(language)"]
        );
        assert_eq!(links("“https://a.com”, she said"), ["https://a.com"]);
        assert_eq!(links("is it https://a.com?"), ["https://a.com"]);
        assert_eq!(links("'https://a.com/q?x=1';"), ["https://a.com/q?x=1"]);
    }

    #[test]
    fn clock_times_have_two_digits_each() {
        assert_eq!(clock(9, 5), "09:05");
        assert_eq!(clock(23, 59), "23:59");
        assert_eq!(clock(0, 0), "00:00");
    }

    #[test]
    fn days_are_local_and_labelled_relative_to_today() {
        let noon_utc = 19_000 * 86_400_000 + 12 * 3_600_000;
        assert_eq!(local_day(noon_utc, 0), 19_000);
        assert_eq!(
            local_day(noon_utc, 13 * 60),
            19_001,
            "already tomorrow in UTC+13"
        );
        assert_eq!(local_day(noon_utc, -13 * 60), 18_999);
        assert_eq!(local_day(0, -60), -1);
        assert_eq!(day_label(19_000, 19_000), Some("Today"));
        assert_eq!(day_label(18_999, 19_000), Some("Yesterday"));
        assert_eq!(day_label(18_990, 19_000), None);
    }

    #[test]
    fn room_names_are_suggested_in_the_valid_form() {
        assert_eq!(suggest_room("Random Stuff"), "random-stuff");
        assert_eq!(suggest_room("  Ops / On-Call!! "), "ops-on-call");
        assert_eq!(suggest_room("team_42"), "team_42");
        assert_eq!(
            suggest_room("Café au lait"),
            "caf-au-lait",
            "letters beyond a-z are dropped"
        );
        assert_eq!(suggest_room("!!!"), "");
        let long = suggest_room(&"Abc ".repeat(20));
        assert!(long.len() <= 32 && !long.ends_with('-'), "{long}");
        for input in ["Random Stuff", "a--b", " x ", "ÄÖÜ 1", &"z".repeat(40)] {
            let room = suggest_room(input);
            assert!(
                room.is_empty() || common::validate_room(&room).is_ok(),
                "{input} -> {room}"
            );
        }
    }
}
