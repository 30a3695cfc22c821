//! The README's tables are promises: error codes, close codes and configuration defaults
//! must match the code.

use backend::{config::Cli, connection::CloseReason};
use clap::CommandFactory;
use common::ErrorCode;

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap()
}

/// The rows of the first table after the line that starts with `heading`, as cells.
fn table_after(readme: &str, heading: &str) -> Vec<Vec<String>> {
    let start = readme
        .lines()
        .position(|line| line.starts_with(heading))
        .unwrap_or_else(|| panic!("README has no line starting {heading:?}"));
    readme
        .lines()
        .skip(start + 1)
        .skip_while(|line| !line.starts_with('|'))
        .take_while(|line| line.starts_with('|'))
        .skip(2)
        .map(|line| {
            line.trim_matches('|')
                .split('|')
                .map(|cell| cell.trim().to_owned())
                .collect()
        })
        .collect()
}

#[test]
fn the_error_code_table_lists_every_code_with_its_meaning_in_order() {
    let documented: Vec<(String, String)> = table_after(&readme(), "Error codes (`error.code`)")
        .into_iter()
        .map(|row| {
            let [code, meaning] = &row[..] else {
                panic!("expected `| code | meaning |`, found {row:?}");
            };
            (code.clone(), meaning.clone())
        })
        .collect();
    let actual: Vec<(String, String)> = ErrorCode::ALL
        .iter()
        .map(|code| {
            (
                format!("`{}`", code.as_str()),
                code.description().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        documented, actual,
        "README error-code rows vs ErrorCode::ALL"
    );
}

#[test]
fn the_close_code_table_lists_exactly_the_relays_close_reasons() {
    let rows = table_after(&readme(), "Close codes the relay sends");
    let documented: Vec<u16> = rows.iter().map(|row| row[0].parse().unwrap()).collect();
    let actual: Vec<u16> = CloseReason::ALL.iter().map(|r| r.code()).collect();
    assert_eq!(
        documented, actual,
        "README close-code rows vs CloseReason::ALL"
    );
}

/// `4 MiB` and friends, as the flags spell them.
fn normalise(value: &str) -> String {
    let value = value.trim_matches('`');
    match value.split_once(' ') {
        Some((number, "MiB")) => (number.parse::<u64>().unwrap() << 20).to_string(),
        _ => value.to_owned(),
    }
}

#[test]
fn the_configuration_table_gives_every_flags_real_default() {
    let command = Cli::command();
    let defaults = |flag: &str| -> Option<String> {
        let name = flag.trim_matches('`').trim_start_matches("--");
        let arg = command
            .get_arguments()
            .find(|arg| arg.get_long() == Some(name))
            .unwrap_or_else(|| panic!("README documents {flag}, which the relay does not have"));
        let values: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        (!values.is_empty()).then(|| values.join(","))
    };
    let mut documented = 0;
    for row in table_after(&readme(), "## Configuration") {
        if row[0].is_empty() {
            continue; // RUST_LOG: a variable only.
        }
        let flags: Vec<&str> = row[0].split(" / ").collect();
        let values: Vec<&str> = row[2].split(" / ").collect();
        assert_eq!(flags.len(), values.len(), "row {row:?}");
        for (flag, value) in flags.iter().zip(values) {
            documented += 1;
            let expected = defaults(flag);
            match expected {
                Some(expected) => assert_eq!(normalise(value), expected, "default of {flag}"),
                None => assert!(
                    ["off", "kernel autotuning"].contains(&value),
                    "{flag} has no default but the README says {value}"
                ),
            }
        }
    }
    // Hidden flags are test hooks, not settings: `--help` does not show them either.
    let flags = command
        .get_arguments()
        .filter(|arg| !arg.is_hide_set())
        .filter(|arg| {
            arg.get_long()
                .is_some_and(|long| long != "help" && long != "version")
        })
        .count();
    assert_eq!(documented, flags, "every flag has a row");
}
