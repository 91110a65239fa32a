//! The JSONPath subset used by `additionalPrinterColumns`:
//! `.a.b`, `.a[0]`, `.a[*].b`, `.a[?(@.type=="Ready")].status`.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    Index(usize),
    All,
    Filter { path: Vec<String>, equals: String },
}

/// A parsed path; unparseable paths yield no values rather than an error, as in kubectl.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonPath(Vec<Step>);

impl JsonPath {
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim().trim_start_matches('{').trim_end_matches('}');
        let mut steps = Vec::new();
        let mut rest = text.strip_prefix('$').unwrap_or(text);
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix('.') {
                let end = r.find(['.', '[']).unwrap_or(r.len());
                if end == 0 {
                    return None;
                }
                steps.push(Step::Field(r[..end].to_string()));
                rest = &r[end..];
            } else if let Some(r) = rest.strip_prefix('[') {
                let close = find_close(r)?;
                steps.push(parse_bracket(&r[..close])?);
                rest = &r[close + 1..];
            } else {
                return None;
            }
        }
        Some(Self(steps))
    }

    pub fn eval<'a>(&self, root: &'a Value) -> Vec<&'a Value> {
        let mut current = vec![root];
        for step in &self.0 {
            let mut next = Vec::new();
            for v in current {
                match (step, v) {
                    (Step::Field(f), Value::Object(m)) => next.extend(m.get(f)),
                    (Step::Index(i), Value::Array(a)) => next.extend(a.get(*i)),
                    (Step::All, Value::Array(a)) => next.extend(a.iter()),
                    (Step::All, Value::Object(m)) => next.extend(m.values()),
                    (Step::Filter { path, equals }, Value::Array(a)) => {
                        next.extend(a.iter().filter(|item| {
                            let got = path.iter().try_fold(*item, |acc, k| acc.get(k));
                            got.is_some_and(|g| match g {
                                Value::String(s) => s == equals,
                                other => {
                                    serde_json::from_str::<Value>(equals).is_ok_and(|e| e == *other)
                                }
                            })
                        }));
                    }
                    _ => {}
                }
            }
            current = next;
        }
        current
    }
}

fn find_close(r: &str) -> Option<usize> {
    let mut depth = 0;
    let mut quoted = None;
    for (i, c) in r.char_indices() {
        match (c, quoted) {
            ('"' | '\'', None) => quoted = Some(c),
            (q, Some(open)) if q == open => quoted = None,
            ('[', None) => depth += 1,
            (']', None) if depth == 0 => return Some(i),
            (']', None) => depth -= 1,
            _ => {}
        }
    }
    None
}

fn parse_bracket(inner: &str) -> Option<Step> {
    if inner == "*" {
        return Some(Step::All);
    }
    if let Ok(i) = inner.parse() {
        return Some(Step::Index(i));
    }
    if let Some(quoted) = inner.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
        return Some(Step::Field(quoted.to_string()));
    }
    let expr = inner.strip_prefix("?(")?.strip_suffix(')')?;
    let (lhs, rhs) = expr.split_once("==")?;
    let path = lhs
        .trim()
        .strip_prefix("@.")?
        .split('.')
        .map(str::to_string)
        .collect();
    let equals = rhs
        .trim()
        .trim_matches(|c| c == '"' || c == '\'')
        .to_string();
    Some(Step::Filter { path, equals })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn printer_column_paths() {
        let obj = json!({"status": {"phase": "Running", "conditions": [
            {"type": "Scheduled", "status": "True"}, {"type": "GuestReady", "status": "False"}
        ]}, "spec": {"disks": [{"name": "a"}, {"name": "b"}]}});
        let eval = |p: &str| {
            JsonPath::parse(p)
                .expect(p)
                .eval(&obj)
                .into_iter()
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(eval(".status.phase"), vec![json!("Running")]);
        assert_eq!(
            eval(".status.conditions[?(@.type==\"GuestReady\")].status"),
            vec![json!("False")]
        );
        assert_eq!(eval(".spec.disks[*].name"), vec![json!("a"), json!("b")]);
        assert_eq!(eval(".spec.disks[1].name"), vec![json!("b")]);
        assert!(eval(".status.host").is_empty());
    }

    #[test]
    fn garbage_paths_do_not_parse() {
        assert!(JsonPath::parse(".a[").is_none());
        assert!(JsonPath::parse("..").is_none());
    }
}
