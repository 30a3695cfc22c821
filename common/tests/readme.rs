//! The README's table of error codes must say exactly what the code says: every
//! [`ErrorCode`], in [`ErrorCode::ALL`] order, with its [`ErrorCode::description`].

use common::ErrorCode;

/// The header row that starts the error-code table in README.md.
const TABLE_HEADER: &str = "| code | meaning |";

/// One row of the table: its line number in README.md and its two cells, trimmed.
struct Row {
    line: usize,
    code: String,
    meaning: String,
}

/// Reads the rows of the error-code table, failing if the table is missing or a row does not
/// have exactly two cells.
fn readme_rows() -> Vec<Row> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
    let readme =
        std::fs::read_to_string(path).unwrap_or_else(|err| panic!("cannot read {path}: {err}"));
    let mut lines = readme
        .lines()
        .enumerate()
        .map(|(index, line)| (index + 1, line));
    let header = lines
        .by_ref()
        .find(|(_, line)| line.trim() == TABLE_HEADER)
        .unwrap_or_else(|| panic!("README.md has no error-code table (a `{TABLE_HEADER}` line)"));
    match lines.next() {
        Some((_, separator)) if separator.trim().starts_with("|-") => {}
        _ => panic!(
            "README.md line {}: the error-code table's header is not followed by `|---|---|`",
            header.0 + 1
        ),
    }
    lines
        .map_while(|(line, text)| text.trim().starts_with('|').then_some((line, text.trim())))
        .map(|(line, text)| {
            let cells: Vec<&str> = text
                .trim_start_matches('|')
                .trim_end_matches('|')
                .split('|')
                .map(str::trim)
                .collect();
            let [code, meaning] = cells[..] else {
                panic!("README.md line {line}: expected `| code | meaning |`, found {text:?}");
            };
            Row {
                line,
                code: code.to_owned(),
                meaning: meaning.to_owned(),
            }
        })
        .collect()
}

#[test]
fn readme_error_code_table_matches_error_code() {
    let rows = readme_rows();
    let mut problems = Vec::new();
    for (index, code) in ErrorCode::ALL.into_iter().enumerate() {
        let expected_code = format!("`{}`", code.as_str());
        let Some(row) = rows.get(index) else {
            problems.push(format!(
                "row {} is missing: expected `| {expected_code} | {} |`",
                index + 1,
                code.description()
            ));
            continue;
        };
        if row.code != expected_code {
            problems.push(format!(
                "README.md line {} (row {}): code is {}, expected {expected_code} \
                 (rows follow ErrorCode::ALL)",
                row.line,
                index + 1,
                row.code
            ));
        } else if row.meaning != code.description() {
            problems.push(format!(
                "README.md line {} ({expected_code}): meaning is {:?}, expected {:?} \
                 (ErrorCode::description)",
                row.line,
                row.meaning,
                code.description()
            ));
        }
    }
    for row in rows.iter().skip(ErrorCode::ALL.len()) {
        problems.push(format!(
            "README.md line {}: extra row {} (not in ErrorCode::ALL)",
            row.line, row.code
        ));
    }
    assert!(
        problems.is_empty(),
        "the README's error-code table disagrees with the code:\n  {}",
        problems.join("\n  ")
    );
}
