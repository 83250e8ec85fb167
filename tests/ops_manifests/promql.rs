//! The metric names a PromQL expression selects, so the alert and dashboard checks can compare
//! them with what the worker exports. Deliberately small: a tokenizer, not a parser.

use std::collections::BTreeSet;

/// Words of PromQL that are not metric names.
pub const PROMQL_KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "inf",
    "nan",
    "Inf",
    "NaN",
];

/// Aggregation operators: written `sum by (x) (...)`, so not always directly followed by `(`.
pub const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

/// Modifiers followed by a parenthesised list of LABEL names (not expressions).
pub const LABEL_LIST_MODIFIERS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The metric names a PromQL expression selects. Skips strings, label matchers (`{...}`), ranges
/// (`[...]`), numbers and durations, function and aggregation names (an identifier followed by
/// `(`), the label lists of `by`/`on`/`group_left`..., keywords and Grafana `$variables`.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let b: Vec<char> = expr.chars().collect();
    let mut out = BTreeSet::new();
    let mut i = 0;
    let skip_ws = |mut j: usize| {
        while j < b.len() && b[j].is_whitespace() {
            j += 1;
        }
        j
    };
    let skip_group = |j: usize, open: char, close: char| -> usize {
        // b[j] == open; return the index after the matching close, honouring strings.
        let mut depth = 0;
        let mut k = j;
        while k < b.len() {
            match b[k] {
                '"' | '\'' | '`' => {
                    let q = b[k];
                    k += 1;
                    while k < b.len() && b[k] != q {
                        if b[k] == '\\' {
                            k += 1;
                        }
                        k += 1;
                    }
                }
                c if c == open => depth += 1,
                c if c == close => {
                    depth -= 1;
                    if depth == 0 {
                        return k + 1;
                    }
                }
                _ => {}
            }
            k += 1;
        }
        panic!("unbalanced {open}{close} in {expr:?}");
    };
    while i < b.len() {
        let c = b[i];
        if c == '"' || c == '\'' || c == '`' {
            let mut k = i + 1;
            while k < b.len() && b[k] != c {
                if b[k] == '\\' {
                    k += 1;
                }
                k += 1;
            }
            i = k + 1;
        } else if c == '{' {
            i = skip_group(i, '{', '}');
        } else if c == '[' {
            i = skip_group(i, '[', ']');
        } else if c == '$' {
            i += 1;
            while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_') {
                i += 1;
            }
        } else if c.is_ascii_digit() || (c == '.' && b.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            // Numbers, durations (5m, 1h30m), exponents (1e3).
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == '_' || b[i] == ':') {
                i += 1;
            }
            let word: String = b[start..i].iter().collect();
            let next = skip_ws(i);
            let followed_by_paren = b.get(next) == Some(&'(');
            if LABEL_LIST_MODIFIERS.contains(&word.as_str()) {
                if followed_by_paren {
                    i = skip_group(next, '(', ')');
                }
            } else if followed_by_paren
                || PROMQL_KEYWORDS.contains(&word.as_str())
                || AGGREGATIONS.contains(&word.as_str())
            {
                // A function or aggregation name, or a keyword.
            } else {
                out.insert(word);
            }
        } else {
            i += 1;
        }
    }
    out
}

/// Metric names a Grafana templating query uses: `label_values(metric, label)` names a metric
/// (or a selector) first and a label second.
pub fn template_query_metrics(q: &str) -> BTreeSet<String> {
    let q = q.trim();
    if let Some(inner) = q
        .strip_prefix("label_values(")
        .and_then(|r| r.strip_suffix(')'))
    {
        match inner.rsplit_once(',') {
            Some((sel, _label)) => metric_names(sel),
            None => BTreeSet::new(), // label_values(label): no metric
        }
    } else if let Some(inner) = q
        .strip_prefix("query_result(")
        .and_then(|r| r.strip_suffix(')'))
    {
        metric_names(inner)
    } else {
        metric_names(q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_name_extraction_catches_unknown_names() {
        // The two checks above are only as good as this extractor: it must see every metric and
        // nothing else.
        assert_eq!(
            metric_names(
                r#"sum by (outcome) (rate(ccsync_bogus_total{outcome="synced", pod=~"a|b"}[5m]))
                   / on(namespace) group_left(pod) max without (le) (other_metric offset 1h) > 0.1e3
                   and ccsync:recorded:thing unless absent(up == bool 1) or histogram_quantile(0.9, x_bucket[$__rate_interval])"#
            ),
            [
                "ccsync:recorded:thing",
                "ccsync_bogus_total",
                "other_metric",
                "up",
                "x_bucket"
            ]
            .map(String::from)
            .into()
        );
        assert_eq!(
            template_query_metrics("label_values(ccsync_build_info{job=\"x\"}, namespace)"),
            ["ccsync_build_info".to_string()].into()
        );
        assert!(metric_names("vector(10000) * 150 * 86400").is_empty());
    }
}
