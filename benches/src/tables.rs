//! The numbers of `docs/benchmarks.md` as JSON, for tools that compare runs: each section's
//! markdown tables, read from the page itself, so the JSON and the page never disagree.
//! `bench-json` writes `docs/benchmarks/<section>.json` for every section whose benchmark does
//! not write a richer file of its own ([`OWN_JSON`]).

use serde_json::{Map, Value, json};

/// Sections whose benchmark writes its own JSON (`bench-rpc`: every sample set and round).
pub const OWN_JSON: &[&str] = &["rpc"];

/// The page's sections, `(name, body)`, between `<!-- BEGIN name -->` and `<!-- END name -->`.
#[must_use]
pub fn sections(page: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut rest = page;
    while let Some(start) = rest.find("<!-- BEGIN ") {
        let after = &rest[start + "<!-- BEGIN ".len()..];
        let Some(close) = after.find(" -->") else {
            break;
        };
        let name = &after[..close];
        let body_start = &after[close + " -->".len()..];
        let end = format!("<!-- END {name} -->");
        let Some(stop) = body_start.find(&end) else {
            break;
        };
        found.push((name.to_owned(), body_start[..stop].trim().to_owned()));
        rest = &body_start[stop + end.len()..];
    }
    found
}

fn cells(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    inner.split('|').map(|c| c.trim().to_owned()).collect()
}

fn is_separator(line: &str) -> bool {
    cells(line)
        .iter()
        .all(|c| !c.is_empty() && c.chars().all(|ch| matches!(ch, '-' | ':')))
}

/// A section as JSON: its title, and each table under the heading it follows, its rows as
/// objects from column name to the cell as shown (units included).
#[must_use]
pub fn section_json(name: &str, body: &str) -> Value {
    let mut title = String::new();
    let mut heading = String::new();
    let mut tables = Vec::new();
    let lines: Vec<&str> = body.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim();
        if let Some(h) = line.strip_prefix('#') {
            let h = h.trim_start_matches('#').trim().to_owned();
            if title.is_empty() {
                title.clone_from(&h);
            }
            heading = h;
        }
        let is_table = line.starts_with('|') && lines.get(i + 1).is_some_and(|l| is_separator(l));
        if !is_table {
            i += 1;
            continue;
        }
        let columns = cells(line);
        i += 2;
        let mut rows = Vec::new();
        while let Some(row) = lines
            .get(i)
            .map(|l| l.trim())
            .filter(|l| l.starts_with('|'))
        {
            let row: Map<String, Value> = columns
                .iter()
                .cloned()
                .zip(cells(row).into_iter().map(Value::String))
                .collect();
            rows.push(Value::Object(row));
            i += 1;
        }
        tables.push(json!({"heading": heading, "columns": columns, "rows": rows}));
    }
    json!({
        "section": name,
        "title": title,
        "source": "docs/benchmarks.md",
        "tables": tables,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "# Benchmarks\n\nintro\n<!-- BEGIN one -->\n## One: a thing\n\n\
        | a | b |\n|---|--:|\n| 1 ms | **2** |\n| 3 | 4 |\n\nprose | not a table\n\
        ### Sub\n\n| x |\n|---|\n| y |\n<!-- END one -->\nafter\n<!-- BEGIN two -->\nnone\n\
        <!-- END two -->\n";

    #[test]
    fn tables_become_rows_keyed_by_column_under_their_heading() {
        let found = sections(PAGE);
        let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["one", "two"]);
        let one = section_json("one", &found[0].1);
        assert_eq!(one["title"], "One: a thing");
        assert_eq!(one["tables"][0]["heading"], "One: a thing");
        assert_eq!(one["tables"][0]["rows"][0]["a"], "1 ms");
        assert_eq!(one["tables"][0]["rows"][1]["b"], "4");
        assert_eq!(one["tables"][1]["heading"], "Sub");
        assert_eq!(one["tables"][1]["rows"][0]["x"], "y");
        assert_eq!(one["tables"].as_array().map(Vec::len), Some(2));
        let two = section_json("two", &found[1].1);
        assert_eq!(two["tables"], json!([]));
    }

    /// The committed JSON is what the committed page gives: a table edited by hand, or a run
    /// whose JSON was not regenerated (`bash benches/run.sh` does it last), fails here.
    #[test]
    fn the_committed_json_matches_the_page() {
        let page = std::fs::read_to_string(crate::docs_path()).expect("docs/benchmarks.md");
        let found = sections(&page);
        assert!(found.len() >= 8, "{} sections", found.len());
        for (name, body) in found {
            if OWN_JSON.contains(&name.as_str()) {
                continue;
            }
            let path = crate::json_path(&name);
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e} (run bench-json)", path.display()));
            let committed: Value = serde_json::from_str(&text).expect("valid JSON");
            assert_eq!(
                committed,
                section_json(&name, &body),
                "{} is not what docs/benchmarks.md gives: run `cargo run -p quiver-benches --bin bench-json`",
                path.display()
            );
        }
    }
}
