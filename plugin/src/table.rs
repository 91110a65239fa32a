//! Tables as kubectl prints them: upper-case headers, columns three spaces apart, ages like
//! `5s`, `3m`, `2h`, `4d`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// Rows of cells under a header; column widths fit the widest cell seen.
pub struct Table {
    widths: Vec<usize>,
    header: Vec<&'static str>,
}

impl Table {
    #[must_use]
    pub fn new(header: &[&'static str]) -> Self {
        Table {
            widths: header.iter().map(|h| h.len()).collect(),
            header: header.to_vec(),
        }
    }

    /// Widens the columns to fit `rows`.
    pub fn fit(&mut self, rows: &[Vec<String>]) {
        for row in rows {
            for (width, cell) in self.widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
    }

    #[must_use]
    pub fn header(&self) -> String {
        let cells: Vec<String> = self.header.iter().map(|h| (*h).to_owned()).collect();
        self.line(&cells)
    }

    /// One row, padded to the column widths (a wider cell pushes the rest right).
    #[must_use]
    pub fn line(&self, row: &[String]) -> String {
        let mut out = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                out.push_str(cell);
            } else {
                let width = self.widths.get(i).copied().unwrap_or(0);
                out.push_str(&format!("{cell:<width$}   "));
            }
        }
        out
    }

    /// The header and every row.
    #[must_use]
    pub fn render(mut self, rows: &[Vec<String>]) -> String {
        self.fit(rows);
        let mut out = self.header();
        out.push('\n');
        for row in rows {
            out.push_str(&self.line(row));
            out.push('\n');
        }
        out
    }
}

/// kubectl's short age: the largest unit, `<unknown>` when unknown.
#[must_use]
pub fn age(created: Option<&Time>, now: Timestamp) -> String {
    let Some(Time(created)) = created else {
        return "<unknown>".to_owned();
    };
    let secs = (now.as_second() - created.as_second()).max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 3600 * 3 => format!("{}m", s / 60),
        s if s < 86_400 * 2 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// `value`, or `<none>` like kubectl when it is missing.
#[must_use]
pub fn or_none(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "<none>".to_owned(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_use_the_largest_unit_like_kubectl() {
        let now = Timestamp::now();
        let at = |secs: i64| {
            Timestamp::from_second(now.as_second() - secs)
                .ok()
                .map(Time)
        };
        assert_eq!(age(at(5).as_ref(), now), "5s");
        assert_eq!(age(at(600).as_ref(), now), "10m");
        assert_eq!(age(at(5 * 3600).as_ref(), now), "5h");
        assert_eq!(age(at(3 * 86_400).as_ref(), now), "3d");
        assert_eq!(age(None, now), "<unknown>");
    }

    #[test]
    fn columns_are_three_spaces_apart_and_fit_the_widest_cell() {
        let rows = vec![vec!["demo".to_owned(), "Running".to_owned()]];
        let out = Table::new(&["NAME", "PHASE"]).render(&rows);
        assert_eq!(out, "NAME   PHASE\ndemo   Running\n");
    }
}
