//! `--only`: the chosen figures' rows and notes spliced into an existing table.

use super::*;

/// The figures one `ccsync bench --only …` run measured.
#[derive(Default)]
pub struct Partial<'a> {
    pub overhead: Option<&'a Overhead>,
    pub api: Option<&'a Backlog>,
    pub big: Option<&'a BigMessages>,
    pub outage: Option<&'a Outage>,
    pub ingest: Option<&'a Ingest>,
    pub replicas: Option<&'a Replicas>,
}

/// One measured part of a partial run: its `--only` name, its rows (in table order), the row a
/// new first row goes after, and its notes with the note each goes after.
pub(super) struct Part {
    name: &'static str,
    rows: Vec<Row>,
    after_row: Option<&'static str>,
    notes: Vec<(String, Option<&'static str>)>,
}

impl Partial<'_> {
    fn parts(&self) -> Vec<Part> {
        let mut v = Vec::new();
        if let Some(o) = self.overhead {
            let mut rows = overhead_rows(o);
            rows.push(cpu_unthrottled_row(o));
            v.push(Part {
                name: "overhead",
                rows,
                after_row: None,
                notes: vec![(overhead_bullet(o), None)],
            });
        }
        if let Some(b) = self.api {
            v.push(Part {
                name: "api",
                rows: api_rows(b),
                after_row: Some("overhead.ratio"),
                notes: Vec::new(),
            });
        }
        if let Some(b) = self.big {
            v.push(Part {
                name: "big",
                rows: vec![big_row(b)],
                after_row: Some("memory.peak_rss_contact_cap"),
                notes: vec![(big_bullet(b), Some("- **4. Memory**"))],
            });
        }
        if let Some(g) = self.outage {
            v.push(Part {
                name: "outage",
                rows: outage_rows(g),
                after_row: None,
                notes: vec![(outage_bullet(g), None)],
            });
        }
        if let Some(g) = self.ingest {
            v.push(Part {
                name: "ingest",
                rows: ingest_rows(g),
                after_row: None,
                notes: vec![(ingest_bullet(g), None)],
            });
        }
        if let Some(r) = self.replicas {
            v.push(Part {
                name: "replicas",
                rows: replicas_rows(r),
                after_row: None,
                notes: vec![(replicas_bullet(r), None)],
            });
        }
        v
    }
}

/// Write the rows and notes of the figures measured by `ccsync bench --only …` into an existing
/// table `md`: a row or note with the same key (or bold head) is replaced, a new one goes after
/// the row before it in its figure (or its figure's neighbour, else the end of the table), and a
/// `Partial run` line under `Runtime` says which rows came from this run, when and how. Earlier
/// `Partial run` lines of the same or fewer parts are dropped: this run replaced their rows.
pub fn splice(md: &str, scale: Scale, partial: &Partial, runtime: Duration) -> String {
    let mut lines: Vec<String> = md.lines().map(str::to_string).collect();
    let row_at = |lines: &[String], key: &str| {
        let cell = format!("| `{key}` |");
        lines.iter().position(|l| l.starts_with(&cell))
    };
    let last_row = |lines: &[String]| lines.iter().rposition(|l| l.starts_with("| `"));
    // Replace the line at `at` when it is there, else insert after `after`.
    let put =
        |lines: &mut Vec<String>, at: Option<usize>, after: Option<usize>, line: String| match (
            at, after,
        ) {
            (Some(i), _) => lines[i] = line,
            (None, Some(i)) => lines.insert(i + 1, line),
            (None, None) => lines.push(line),
        };
    let bullet_at = |lines: &[String], head: &str| lines.iter().position(|l| l.starts_with(head));
    let last_bullet = |lines: &[String]| {
        let end = lines
            .iter()
            .position(|l| l.starts_with("## Profiling notes"))
            .unwrap_or(lines.len());
        lines[..end].iter().rposition(|l| l.starts_with("- **"))
    };
    let parts = partial.parts();
    let mut keys = Vec::new();
    for part in &parts {
        let mut prev: Option<&str> = part.after_row;
        for row in &part.rows {
            let after = prev
                .and_then(|k| row_at(&lines, k))
                .or_else(|| last_row(&lines));
            let at = row_at(&lines, row.key);
            put(&mut lines, at, after, row_line(row));
            keys.push(format!("`{}`", row.key));
            prev = Some(row.key);
        }
        for (note, after_head) in &part.notes {
            let note = note.trim_end().to_string();
            // The note's head: "- **<title>**".
            let head = note
                .find("**")
                .and_then(|i| note[i + 2..].find("**").map(|j| &note[..i + 2 + j + 2]))
                .unwrap_or(&note)
                .to_string();
            let after = after_head
                .and_then(|h| bullet_at(&lines, h))
                .or_else(|| last_bullet(&lines));
            let at = bullet_at(&lines, &head);
            put(&mut lines, at, after, note);
        }
    }
    let date = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let names: Vec<&str> = parts.iter().map(|p| p.name).collect();
    let partial_line = format!(
        "| Partial run | {} and their notes: `ccsync bench --scale {} --only {}` ({build} build), \
         {date}, {:.0} s; the other rows are from the runs above |",
        keys.join(", "),
        scale.name(),
        names.join(","),
        runtime.as_secs_f64()
    );
    // Older partial runs whose every part this run measured again.
    lines.retain(|l| {
        let Some(only) = l
            .strip_prefix("| Partial run |")
            .and_then(|r| r.split("--only ").nth(1))
            .and_then(|r| r.split('`').next())
        else {
            return true;
        };
        !only.split(',').all(|p| names.contains(&p.trim()))
    });
    let after = lines
        .iter()
        .rposition(|l| l.starts_with("| Partial run |"))
        .or_else(|| lines.iter().position(|l| l.starts_with("| Runtime |")));
    put(&mut lines, None, after, partial_line);
    let mut out = lines.join("\n");
    out.push('\n');
    out
}
